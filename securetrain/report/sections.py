"""Typed report sections: privacy, robustness, membership and encrypted inference.

Each section is a dataclass registered in :data:`SECTIONS` under the report key it fills.
Its fields without a default are the schema's required keys (see
:data:`securetrain.report.schema.SECTION_KEYS`); fields with a default of ``None`` are optional
keys, written to JSON only when set; every other key a producer adds lives in ``extra`` and
round-trips unchanged. A new field is one line: ``name: type | None = None``.

A section also reads and writes like the JSON object it serialises to (``section["epsilon"]``,
``section.get("roc_curves")``, ``{**section}``), so code written against the dict form keeps
working; the typed attributes are the primary interface.

Example:
    >>> from securetrain.report.sections import SECTIONS, RobustnessSection
    >>> s = RobustnessSection(norm="linf", epsilons=[0.1], attacks={"pgd": [0.5]}, worst_case=[0.5])
    >>> s.worst_case, s["norm"]
    ([0.5], 'linf')
    >>> again = SECTIONS.get("robustness").from_dict({**s.to_dict(), "first_breaker": {"pgd": 3}})
    >>> again.extra, again.to_dict()["first_breaker"]
    ({'first_breaker': {'pgd': 3}}, {'pgd': 3})
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from securetrain.errors import ReportError
from securetrain.registry import Registry
from securetrain.report.schema import SECTION_KEYS, check_section

S = TypeVar("S", bound="Section")


@dataclass(eq=False)
class Section(MutableMapping[str, Any]):
    """Base class of the report's typed sections (a dataclass that also reads as a mapping).

    Subclasses set ``key`` (the report key they fill, e.g. ``"privacy"``) and ``title``, and
    are registered in :data:`SECTIONS` with :func:`register_section`.
    """

    key: ClassVar[str] = ""
    title: ClassVar[str] = ""
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)
    """Keys a producer added that this class does not declare; written back unchanged."""

    # ------------------------------------------------------------------ JSON

    @classmethod
    def required_keys(cls) -> tuple[str, ...]:
        """The schema's required keys of this section (always written, even when ``None``)."""
        return SECTION_KEYS.get(cls.key, ())

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Declared keys, in output order (``extra`` excluded)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    def _present(self) -> Iterator[tuple[str, Any]]:
        required = set(self.required_keys())
        for name in self.field_names():
            value = getattr(self, name)
            if value is not None or name in required:
                yield name, value
        yield from self.extra.items()

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this section: declared keys first (unset optional ones left out), then ``extra``."""
        return dict(self._present())

    @classmethod
    def from_dict(cls: type[S], obj: Mapping[str, Any]) -> S:
        """Build from a parsed JSON object; missing required keys raise :class:`ReportError`.

        Unknown keys go to ``extra`` (kept as they are); a section object is returned as a copy.
        """
        if isinstance(obj, Section):
            obj = obj.to_dict()
        if not isinstance(obj, Mapping):
            raise ReportError(f"report section {cls.key!r} must be an object or null, got {type(obj).__name__}")
        data = dict(obj)
        check_section(cls.key, data)
        known = set(cls.field_names())
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)

    # ------------------------------------------------------------------ the mapping view

    def __getitem__(self, name: str) -> Any:
        if name in self.field_names():
            value = getattr(self, name)
            if value is None and name not in self.required_keys():
                raise KeyError(name)
            return value
        return self.extra[name]

    def __setitem__(self, name: str, value: Any) -> None:
        if name in self.field_names():
            setattr(self, name, value)
        else:
            self.extra[name] = value

    def __delitem__(self, name: str) -> None:
        if name in self.required_keys():
            raise ReportError(f"{name!r} is a required key of report section {self.key!r}; it cannot be removed")
        if name in self.field_names():
            if getattr(self, name) is None:
                raise KeyError(name)
            setattr(self, name, None)
        else:
            del self.extra[name]

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._present())

    def __len__(self) -> int:
        return sum(1 for _ in self._present())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"

    # ------------------------------------------------------------------ hooks

    def explain(self) -> list[str]:
        """Sentences a reader needs to understand this section's figures (shown above its tables)."""
        return []

    def merge_into(self, sections: Mapping[str, Section | None]) -> None:
        """Called by :meth:`Report.add` with the report's other sections; e.g. an audit that
        found the privacy claim violated marks the privacy section. Default: nothing."""


def _g(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


SECTIONS: Registry[type[Section]] = Registry("report section")
"""Section classes by the report key they fill (``privacy``, ``robustness``, ``membership``, ``encrypted``)."""


def register_section(cls: type[S]) -> type[S]:
    """Class decorator: register a :class:`Section` subclass in :data:`SECTIONS` under its ``key``."""
    if not cls.key:
        raise ReportError(f"{cls.__name__} must set the class attribute 'key' (the report key it fills)")
    SECTIONS.add(cls.key, cls)
    return cls


def as_section(key: str, value: Section | Mapping[str, Any] | None) -> Section | None:
    """``value`` as the registered section class of ``key`` (a dict is converted; ``None`` stays ``None``).

    Example:
        >>> as_section("membership", None) is None
        True
        >>> type(as_section("membership", {"attack": "loss", "auc": 0.5, "tpr_at_fpr": {},
        ...                                "advantage": 0.0, "epsilon_lower_bound": 0.0})).__name__
        'MembershipSection'
    """
    if value is None:
        return None
    cls = SECTIONS.get(key)
    if isinstance(value, cls):
        return value
    return cls.from_dict(value)


@register_section
@dataclass(eq=False, repr=False)
class PrivacySection(Section):
    """The ``privacy`` section: the (epsilon, delta) guarantee as accounted, and whether it holds.

    Example:
        >>> p = PrivacySection(epsilon=2.9, delta=1e-5, accountant="prv", noise_multiplier=1.1,
        ...                    max_grad_norm=1.0, sample_rate=0.05, steps=100, poisson_sampling=True)
        >>> p.valid, p.to_dict()["warnings"]
        (True, [])
        >>> p.mark_violated("bound 3.5 > claimed 2.9"); p.valid
        False
    """

    key: ClassVar[str] = "privacy"
    title: ClassVar[str] = "Privacy (differential privacy)"

    epsilon: float | None
    delta: float | None
    accountant: str | None
    noise_multiplier: float | None
    max_grad_norm: float | None
    sample_rate: float | None
    steps: int | None
    poisson_sampling: bool | None
    valid: bool = True
    warnings: list[str] = field(default_factory=list)
    epsilon_history: list[list[float | None]] | None = None
    target_epsilon: float | None = None
    validity_checks: list[str] | None = None
    violated_by_audit: bool | None = None
    pretraining: dict[str, Any] | None = None
    """Public pretraining and frozen parameters before the private training (``Pretraining.to_dict()``)."""

    def explain(self) -> list[str]:
        out = []
        if self.epsilon is not None and self.delta is not None:
            out.append(
                f"(epsilon, delta) = ({self.epsilon:.3g}, {self.delta:.3g}) promises that adding or removing any one "
                f"training example changes the probability of any outcome of training by at most a factor "
                f"e^{self.epsilon:.3g} = {math.exp(min(self.epsilon, 700.0)):.3g}, except with probability "
                f"{self.delta:.3g}. Smaller epsilon means more private; it bounds what any attack can learn."
            )
        else:
            out.append("No finite epsilon was accounted: this run carries no differential-privacy guarantee.")
        out.append(
            f"The {self.accountant or '?'} accountant computed epsilon for DP-SGD with noise multiplier "
            f"{_g(self.noise_multiplier)}, per-sample clipping norm {_g(self.max_grad_norm)}, sample rate "
            f"{_g(self.sample_rate)} and {_g(self.steps)} steps."
        )
        public = (self.pretraining or {}).get("data")
        if public:
            out.append(
                f"Before its private training the model was pretrained without privacy on the public data set "
                f"{public}: epsilon covers the private training set only; the public data is not protected "
                "(the guarantee assumes it is public and shares no sample with the private set)."
            )
        verdict = "valid" if self.valid else "NOT valid"
        out.append(
            f"'{verdict}': during training every step was checked against the accountant's assumptions "
            "(Poisson-sampled batches, each sample's gradient clipped once, noise on every step, no gradients "
            "accumulated across batches or computed outside the per-sample path)"
            + (
                "; none was broken."
                if self.valid
                else "; at least one was broken (see the warnings), so the epsilon above does not bound this run."
            )
        )
        return out

    def mark_violated(self, reason: str) -> None:
        """Mark the guarantee not valid because an audit measured more leakage than it allows."""
        self.valid = False
        self.violated_by_audit = True
        warning = f"membership audit: privacy claim violated: {reason}"
        if warning not in self.warnings:
            self.warnings.append(warning)


@register_section
@dataclass(eq=False, repr=False)
class RobustnessSection(Section):
    """The ``robustness`` section: robust accuracy per attack and perturbation size, and the worst case.

    Example:
        >>> r = RobustnessSection(norm="linf", epsilons=[0.1, 0.2], attacks={"pgd": [0.6, 0.2]},
        ...                       worst_case=[0.6, 0.2])
        >>> r.at(0.2), r.flags
        (0.2, [])
    """

    key: ClassVar[str] = "robustness"
    title: ClassVar[str] = "Robustness (evasion attacks)"

    norm: str
    epsilons: list[float]
    attacks: dict[str, list[float]]
    worst_case: list[float]
    flags: list[str] = field(default_factory=list)
    clean_accuracy: float | None = None
    n_samples: int | None = None
    bounds: list[float] | None = None
    preset: str | None = None
    attack_configs: dict[str, dict[str, Any]] | None = None

    def explain(self) -> list[str]:
        n = f"{self.n_samples} " if self.n_samples else ""
        b = self.bounds or []
        rng = f" (inputs in [{_g(b[0])}, {_g(b[1])}])" if len(b) == 2 else ""
        out = [
            f"Robust accuracy is the share of the {n}test samples still classified correctly when an attack may "
            f"change each input by at most epsilon in the {self.norm} norm{rng}. The worst case counts a sample "
            "as broken if any attack broke it, so it is an upper bound on the true robust accuracy: a stronger "
            "attack can only lower it."
        ]
        configs = self.attack_configs or {}
        if configs:
            parts = []
            for name, cfg in configs.items():
                detail = ", ".join(
                    f"{k} {_g(v)}"
                    for k, v in cfg.items()
                    if k not in ("name", "norm", "kind") and isinstance(v, (str, int, float))
                )
                parts.append(f"{name} ({detail})" if detail else name)
            preset = f" with the {self.preset} preset" if self.preset else ""
            out.append(f"Attacks that ran{preset}: {'; '.join(parts)}.")
        elif self.attacks:
            out.append(f"Attacks that ran: {', '.join(self.attacks)}.")
        if self.flags:
            out.append(
                "Flags mark signs of gradient masking: a model that only hides its gradients looks robust to "
                "gradient attacks without being robust."
            )
        return out

    def at(self, epsilon: float) -> float | None:
        """Worst-case robust accuracy at ``epsilon`` (``None`` if it was not audited)."""
        for e, acc in zip(self.epsilons, self.worst_case):
            if math.isclose(float(e), float(epsilon), rel_tol=1e-9, abs_tol=1e-12):
                return float(acc)
        return None


@register_section
@dataclass(eq=False, repr=False)
class MembershipSection(Section):
    """The ``membership`` section: measured leakage (membership inference, empirical epsilon lower bounds).

    Example:
        >>> m = MembershipSection(attack="loss", auc=0.6, tpr_at_fpr={"0.001": 0.0, "0.01": 0.05},
        ...                       advantage=0.1, epsilon_lower_bound=0.2, min_resolvable_fpr=1 / 397)
        >>> m.lowest_resolvable_tpr()
        ('0.01', 0.05)
    """

    key: ClassVar[str] = "membership"
    title: ClassVar[str] = "Measured leakage (privacy attacks)"

    attack: str
    auc: float | None
    tpr_at_fpr: dict[str, float]
    advantage: float | None
    epsilon_lower_bound: float | None
    confidence: float | None = None
    delta: float | None = None
    min_resolvable_fpr: float | None = None
    members: int | None = None
    nonmembers: int | None = None
    roc_curves: dict[str, dict[str, list[float]]] | None = None
    privacy_violated: bool | None = None
    consistency: str | None = None

    def explain(self) -> list[str]:
        floor = self.resolvable_fpr()
        out = [
            "Membership inference guesses whether an example was in the training set. AUC 0.5 and advantage 0 "
            "mean the attack learned nothing; what matters most is the true-positive rate at a low false-positive "
            "rate (confident guesses about a few examples)."
        ]
        if floor is not None:
            out.append(
                f"With {self.nonmembers or round(1 / floor)} non-members the smallest measurable false-positive rate "
                f"is {floor:.3g}; rates below it are not shown or reported."
            )
        conf = f" with confidence {self.confidence:.0%}" if self.confidence else ""
        if self.epsilon_lower_bound is not None:
            out.append(
                f"The empirical lower bound epsilon >= {self.epsilon_lower_bound:.3g}{conf} is what these attacks "
                "prove: training leaked at least that much. It cannot show that a model is private (a stronger "
                "attack may find more); only the accounted epsilon of differential privacy bounds the leakage "
                "from above. A lower bound above the accounted epsilon means the accounting is wrong."
            )
        return out

    def lowest_resolvable_tpr(self) -> tuple[str, float] | None:
        """``(fpr key, TPR)`` at the smallest reported FPR the test set can resolve (at least 1/non-members)."""
        floor = self.resolvable_fpr()
        usable = []
        for k, v in self.tpr_at_fpr.items():
            try:
                f = float(k)
            except ValueError:
                continue
            if floor is None or f >= floor * (1 - 1e-9):
                usable.append((f, k, v))
        if not usable:
            return None
        _, k, v = min(usable)
        return k, float(v)

    def resolvable_fpr(self) -> float | None:
        """The smallest false-positive rate the audit can measure: ``1 / non-members``."""
        if self.min_resolvable_fpr:
            return float(self.min_resolvable_fpr)
        if self.nonmembers:
            return 1.0 / float(self.nonmembers)
        return None

    def merge_into(self, sections: Mapping[str, Section | None]) -> None:
        """If the audit found the privacy claim violated, mark the privacy section not valid."""
        privacy = sections.get("privacy")
        if isinstance(privacy, PrivacySection) and self.privacy_violated:
            privacy.mark_violated(self.consistency or "the empirical lower bound exceeds the reported epsilon")


@register_section
@dataclass(eq=False, repr=False)
class EncryptedSection(Section):
    """The ``encrypted`` section: CKKS parameters, fidelity against the plaintext model, timings and sizes.

    Example:
        >>> e = EncryptedSection(scheme="CKKS", poly_modulus_degree=8192, coeff_mod_bit_sizes=[40, 30, 40],
        ...                      security_bits=128, mode="throughput", agreement=1.0, max_abs_error=0.01,
        ...                      latency_s=4.0, per_sample_s=0.01, ciphertext_bytes=300000,
        ...                      public_context_bytes=2000000)
        >>> e["agreement"], "samples" in e
        (1.0, False)
    """

    key: ClassVar[str] = "encrypted"
    title: ClassVar[str] = "Encrypted inference"

    scheme: str
    poly_modulus_degree: int
    coeff_mod_bit_sizes: list[int]
    security_bits: int
    mode: str
    agreement: float | None
    max_abs_error: float | None
    latency_s: float | None
    per_sample_s: float | None
    ciphertext_bytes: int
    public_context_bytes: int
    samples: int | None = None
    variant: str | None = None
    tolerance: float | None = None

    def explain(self) -> list[str]:
        n = f"{self.samples} " if self.samples else ""
        return [
            f"The model ran on {n}encrypted test samples under {self.scheme} ({self.security_bits}-bit security, "
            f"ring dimension {self.poly_modulus_degree}, {self.mode} mode): the client encrypted, a server holding "
            "only the public context computed on ciphertexts, and the client decrypted. Agreement is the share of "
            "samples whose encrypted prediction equals the plaintext model's; the logit error is the largest "
            "difference between the decrypted and the plaintext logits."
        ]


__all__ = [
    "SECTIONS",
    "EncryptedSection",
    "MembershipSection",
    "PrivacySection",
    "RobustnessSection",
    "Section",
    "as_section",
    "register_section",
]
