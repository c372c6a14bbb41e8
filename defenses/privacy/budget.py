"""``PrivacyBudget``: the steps released so far, the epsilon they spent, whether one more fits.

The history is a list of :class:`HistoryEntry` records ``(noise_multiplier, sample_rate,
steps)``: consecutive steps at the same noise and rate share one record. The budget knows
its cap (the smaller of the target epsilon and ``max_epsilon``) and, for the common case
of a constant noise and rate, how many steps fit (:func:`max_steps_within`, cached); a
history that mixes rates (several hooked forward passes per step) is asked the
accountant once per released step.

Example:
    >>> from defenses.privacy.budget import PrivacyBudget
    >>> budget = PrivacyBudget("rdp", delta=1e-5, noise_multiplier=1.0, sample_rate=0.05, cap=3.0)
    >>> budget.budget_steps
    41
    >>> for _ in range(41):
    ...     budget.record()
    >>> budget.steps, budget.fits_one_more(), budget.spent() <= 3.0
    (41, False, True)
    >>> budget.state_dict()["history"]
    [[1.0, 0.05, 41]]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from defenses.privacy import accounting
from securetrain.errors import PrivacyError


@dataclass(frozen=True)
class HistoryEntry:
    """``steps`` consecutive noisy steps at one ``noise_multiplier`` and ``sample_rate``."""

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __iter__(self) -> Iterator[float]:
        """``(noise_multiplier, sample_rate, steps)``, as the accountants take it."""
        return iter((self.noise_multiplier, self.sample_rate, self.steps))

    def as_tuple(self) -> tuple[float, float, int]:
        """``(noise_multiplier, sample_rate, steps)``."""
        return (self.noise_multiplier, self.sample_rate, self.steps)


@lru_cache(maxsize=256)
def max_steps_within(
    accountant: str, noise_multiplier: float, sample_rate: float, delta: float, cap: float, hint: int = 0
) -> int:
    """Steps at a constant noise and rate whose epsilon stays within ``cap`` (``hint`` only speeds it up)."""
    return accounting.max_steps(
        accountant,
        noise_multiplier=noise_multiplier,
        sample_rate=sample_rate,
        delta=delta,
        target=cap,
        hint=hint or None,
    )


class PrivacyBudget:
    """The accountant's history of one run and the cap no step may exceed.

    ``noise_multiplier`` and ``sample_rate``: the schedule's (a step with ``g`` hooked
    passes per sample is recorded at rate ``g * sample_rate``); ``cap``: the epsilon no step
    may exceed (``None``: no cap); ``cap_name``: how messages call it; ``hint``: the planned
    number of steps (speeds up :attr:`budget_steps`).
    """

    def __init__(
        self,
        accountant: str,
        *,
        delta: float,
        noise_multiplier: float,
        sample_rate: float,
        cap: float | None = None,
        cap_name: str = "target epsilon",
        hint: int = 0,
    ) -> None:
        self.accountant = accountant
        self.delta = float(delta)
        self.noise_multiplier = float(noise_multiplier)
        self.sample_rate = float(sample_rate)
        self.cap = cap
        self.cap_name = cap_name
        self.budget_steps: int | None = None
        """Steps at the schedule's noise and rate that fit the cap (``None``: no cap or no noise)."""
        if cap is not None and self.noise_multiplier:
            self.budget_steps = max_steps_within(
                accountant, self.noise_multiplier, self.sample_rate, self.delta, cap, hint
            )
        self._entries: list[HistoryEntry] = []
        self._next_fits: tuple[tuple[Any, ...], bool] | None = None

    # ------------------------------------------------------------------ the history

    @property
    def history(self) -> tuple[HistoryEntry, ...]:
        """The released steps, oldest first."""
        return tuple(self._entries)

    @property
    def steps(self) -> int:
        """Noisy (logical) steps released so far."""
        return sum(e.steps for e in self._entries)

    def record(self, groups: int = 1) -> None:
        """Account one released step whose samples each went through ``groups`` hooked passes."""
        q = self.sample_rate * max(1, int(groups))
        last = self._entries[-1] if self._entries else None
        if last is not None and last.noise_multiplier == self.noise_multiplier and last.sample_rate == q:
            self._entries[-1] = HistoryEntry(last.noise_multiplier, last.sample_rate, last.steps + 1)
        else:
            self._entries.append(HistoryEntry(self.noise_multiplier, q, 1))

    # ------------------------------------------------------------------ epsilon

    @property
    def report_accountant(self) -> str:
        """The accountant that can analyse this history (``gdp`` falls back to ``rdp`` for mixed rates)."""
        if self.accountant == "gdp" and len({(e.noise_multiplier, e.sample_rate) for e in self._entries}) > 1:
            return "rdp"
        return self.accountant

    def spent(self) -> float:
        """Epsilon spent so far at :attr:`delta` (``inf`` without noise)."""
        return accounting.upper_epsilon(self.report_accountant, [e.as_tuple() for e in self._entries], self.delta)

    def accountant_figures(self) -> dict[str, float]:
        """For a ``gdp`` run: the gdp figure and the prv upper bound of the same history (else empty)."""
        if self.report_accountant != "gdp" or not self._entries:
            return {}
        hist = [e.as_tuple() for e in self._entries]
        return {"gdp": accounting.epsilon("gdp", hist, self.delta), "prv": accounting.epsilon("prv", hist, self.delta)}

    def curve(self, points: int) -> list[list[float]]:
        """``[[step, epsilon], ...]`` at about ``points`` steps of the history."""
        return accounting.epsilon_curve(
            self.report_accountant, [e.as_tuple() for e in self._entries], self.delta, points
        )

    @property
    def worst_groups(self) -> int:
        """The most hooked-pass groups any released step had (1 for a run without accumulation)."""
        if not self.sample_rate:
            return 1
        return max([1, *(round(e.sample_rate / self.sample_rate) for e in self._entries)])

    def fits_one_more(self, groups: int = 1) -> bool:
        """Whether one more step at the schedule's noise, with ``groups`` hooked-pass groups, keeps the epsilon within the cap.

        A step whose samples went through ``groups`` groups of passes (gradient accumulation)
        is charged at rate ``groups * sample_rate``, as :meth:`record` will account it.
        """
        cap = self.cap
        if cap is None or not self.noise_multiplier:
            return True
        sigma = self.noise_multiplier
        q = self.sample_rate * max(1, int(groups))
        if q == self.sample_rate and all(e.noise_multiplier == sigma and e.sample_rate == q for e in self._entries):
            return self.budget_steps is not None and self.steps < self.budget_steps
        key = (len(self._entries), self._entries[-1] if self._entries else None, cap, sigma, q)
        if self._next_fits is None or self._next_fits[0] != key:
            nxt = [e.as_tuple() for e in self._entries] + [(sigma, q, 1)]
            accountant = self.report_accountant if self._entries else self.accountant
            if accountant == "gdp" and q != self.sample_rate:
                accountant = "rdp"  # gdp cannot analyse mixed rates: record() will report rdp then
            self._next_fits = (key, accounting.upper_epsilon(accountant, nxt, self.delta) <= cap)
        return self._next_fits[1]

    def stop_reason(self, groups: int | None = None) -> str | None:
        """Why the next step must not be taken, or ``None`` when it fits.

        ``groups``: the hooked-pass groups of the step about to be released; ``None``
        charges the worst case seen so far (:attr:`worst_groups`).
        """
        g = self.worst_groups if groups is None else max(1, int(groups))
        if self.fits_one_more(g):
            return None
        assert self.cap is not None
        what = "one more step" if g == 1 else f"one more step with {g} accumulated passes (rate {g} x sample_rate)"
        return (
            f"stopped after {self.steps} steps: {what} would spend more than the {self.cap_name} {self.cap:g} "
            f"(spent so far: epsilon {self.spent():.4g} at delta {self.delta:g})"
        )

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        """``{"history": [[noise_multiplier, sample_rate, steps], ...]}``."""
        return {"history": [list(e.as_tuple()) for e in self._entries]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the history by the one of :meth:`state_dict`."""
        entries = []
        for h in state.get("history", []):
            try:
                sigma, q, n = h
                entries.append(HistoryEntry(float(sigma), float(q), int(n)))
            except (TypeError, ValueError):
                raise PrivacyError(
                    f"a privacy history entry must be [noise_multiplier, sample_rate, steps], got {h!r}"
                ) from None
        self._entries = entries
        self._next_fits = None


__all__ = ["HistoryEntry", "PrivacyBudget", "max_steps_within"]
