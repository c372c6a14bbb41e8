"""Augmentations for augmentation multiplicity (``DifferentialPrivacy(augmult=K, augment=...)``).

An :class:`Augmentation` turns a batch of rows into a batch of randomly augmented rows of
the same shape, **each row from that row alone** (so that every view of a sample depends on
that sample only, which is what keeps the privacy unit the sample), drawing its randomness
from the generator it is given. :data:`AUGMENTATIONS` is the registry, by name:

===============  ==============================================================================
``shift1``       random translation by up to 1 pixel each way, zero padding (8x8 images: digits)
``shift2``       up to 2 pixels (28x28 images: mnist-5k)
``shift4``       up to 4 pixels (32x32 images)
``flip-shift4``  ``shift4`` and a horizontal flip half of the time (natural images such as
                 CIFAR-10; never for digits or letters, whose mirror images are other symbols)
``identity``     exact copies (no augmentation; for checks)
===============  ==============================================================================

A translation by ``(dy, dx)`` with zero padding is the same as padding by ``s`` pixels and
cropping at a random offset (the "random crop with padding" of De et al. 2022).
:func:`default_augmentation` picks the translation for an image's size; data that is not an
image (a ``(C, H, W)`` sample) has no default, and a run with ``augmult`` on it is refused
until an augmentation is named. Register your own with ``AUGMENTATIONS.add(name, factory)``
(or declare it in the entry-point group ``securetrain.augmentations``), then pass its name.

Example:
    >>> import torch
    >>> from defenses.privacy.augment import AUGMENTATIONS, default_augmentation
    >>> shift = AUGMENTATIONS.get("shift1")()
    >>> x = torch.arange(16.0).view(1, 1, 4, 4).repeat(3, 1, 1, 1)
    >>> out = shift(x, torch.Generator().manual_seed(0))
    >>> out.shape, bool((out.sum((1, 2, 3)) <= x.sum((1, 2, 3))).all())
    (torch.Size([3, 1, 4, 4]), True)
    >>> default_augmentation((1, 8, 8)), default_augmentation((1, 28, 28))
    ('shift1', 'shift2')
    >>> default_augmentation((30,))
    Traceback (most recent call last):
    ...
    securetrain.errors.PrivacyError: augmult needs an augmentation of the data, and samples of shape (30,) are not images (C, H, W) that the built-in augmentations (shift1, shift2, shift4, flip-shift4) apply to; register an augmentation for this data in defenses.privacy.AUGMENTATIONS and pass its name as augment=, or leave augmult out
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch

from securetrain.errors import PrivacyError
from securetrain.registry import Registry

IMAGE_AUGMENTATIONS = ("shift1", "shift2", "shift4", "flip-shift4")
"""The built-in augmentations of images (what :func:`default_augmentation` chooses from)."""


class Augmentation(ABC):
    """A random transformation of each row of a batch, from that row alone.

    Subclasses write :meth:`__call__` (the rows ``x``, shape ``(N, *sample_shape)``, and the
    generator to draw from; returns a new tensor of the same shape) and, where they apply
    to some shapes only, :meth:`check`.
    """

    name: ClassVar[str] = "augmentation"

    def check(self, sample_shape: Sequence[int]) -> None:
        """Raise :class:`~securetrain.errors.PrivacyError` when this cannot augment samples of ``sample_shape``."""
        return None

    @abstractmethod
    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The augmented rows (a new tensor; ``x`` is left as it is)."""


class Identity(Augmentation):
    """Exact copies: every view of a sample is the sample (augmentation multiplicity then changes nothing)."""

    name: ClassVar[str] = "identity"

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x.clone()


class RandomShift(Augmentation):
    """Translate each image by a random ``(dy, dx)`` in ``[-max_shift, max_shift]``, filling with zeros.

    ``flip``: also mirror each image left-right with probability 1/2 (only for data whose
    mirror image is a valid sample of the same class).
    """

    def __init__(self, max_shift: int, *, flip: bool = False, name: str = "shift") -> None:
        if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
            raise PrivacyError(f"max_shift must be an integer >= 0, got {max_shift!r}")
        self.max_shift = max_shift
        self.flip = bool(flip)
        self.label = name

    def check(self, sample_shape: Sequence[int]) -> None:
        shape = tuple(int(s) for s in sample_shape)
        if len(shape) != 3:
            raise PrivacyError(
                f"the {self.label} augmentation translates images of shape (C, H, W), and samples have shape {shape}; "
                "choose an augmentation for this data (augment=) or leave augmult out"
            )
        if min(shape[1:]) <= 2 * self.max_shift:
            raise PrivacyError(
                f"the {self.label} augmentation shifts by up to {self.max_shift} pixels, too far for "
                f"{shape[1]}x{shape[2]} images; choose a smaller shift (augment=shift1)"
            )

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if x.dim() != 4:
            raise PrivacyError(
                f"the {self.label} augmentation needs a batch of images (N, C, H, W), got shape {tuple(x.shape)}"
            )
        n, _, h, w = x.shape
        s = self.max_shift
        offsets = torch.randint(0, 2 * s + 1, (n, 2), generator=generator).to(x.device)
        flips = torch.rand(n, generator=generator).to(x.device) < 0.5 if self.flip else None
        if s == 0:
            out = x.clone()
        else:
            c, wp = x.shape[1], w + 2 * s
            padded = torch.nn.functional.pad(x, (s, s, s, s)).reshape(n, c, -1)
            rows = torch.arange(h, device=x.device)[None, :] + offsets[:, :1]  # (n, h)
            cols = torch.arange(w, device=x.device)[None, :] + offsets[:, 1:]  # (n, w)
            flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
            # a gather keeps the standard (N, C, H, W) strides: ExpandedWeights' convolutions need them
            out = torch.gather(padded, 2, flat).view(n, c, h, w)
        if flips is not None:
            out = torch.where(flips[:, None, None, None], out.flip(-1), out)
        return out


def _shift(max_shift: int, *, flip: bool = False) -> Callable[[], Augmentation]:
    name = f"{'flip-' if flip else ''}shift{max_shift}"

    def factory() -> Augmentation:
        return RandomShift(max_shift, flip=flip, name=name)

    factory.__name__ = name.replace("-", "_")
    factory.__doc__ = f"A {RandomShift.__name__} by up to {max_shift} pixels" + (", with flips" if flip else "")
    return factory


AUGMENTATIONS: Registry[Callable[[], Augmentation]] = Registry(
    "augmentation", entry_point_group="securetrain.augmentations"
)
AUGMENTATIONS.add("shift1", _shift(1))
AUGMENTATIONS.add("shift2", _shift(2))
AUGMENTATIONS.add("shift4", _shift(4))
AUGMENTATIONS.add("flip-shift4", _shift(4, flip=True))
AUGMENTATIONS.add("identity", Identity)


def default_augmentation(sample_shape: Sequence[int]) -> str:
    """The built-in augmentation for samples of ``sample_shape``: a translation sized to the image.

    Images under 16 pixels a side get ``shift1``, under 32 ``shift2``, larger ``shift4``
    (no flips: whether a mirror image is a valid sample depends on the data). Anything else
    is refused with a :class:`~securetrain.errors.PrivacyError`.
    """
    shape = tuple(int(s) for s in sample_shape)
    if len(shape) == 3 and min(shape[1:]) >= 4:
        side = min(shape[1:])
        return "shift1" if side < 16 else "shift2" if side < 32 else "shift4"
    raise PrivacyError(
        f"augmult needs an augmentation of the data, and samples of shape {shape} are not images (C, H, W) that "
        f"the built-in augmentations ({', '.join(IMAGE_AUGMENTATIONS)}) apply to; register an augmentation for "
        "this data in defenses.privacy.AUGMENTATIONS and pass its name as augment=, or leave augmult out"
    )


def make_augmentation(name: str) -> Augmentation:
    """A fresh augmentation registered as ``name`` (``UnknownNameError`` lists the choices)."""
    aug = AUGMENTATIONS.get(name)()
    if not isinstance(aug, Augmentation):
        raise PrivacyError(f"the augmentation registered as {name!r} built {aug!r}, not an Augmentation")
    return aug


__all__ = [
    "AUGMENTATIONS",
    "IMAGE_AUGMENTATIONS",
    "Augmentation",
    "Identity",
    "RandomShift",
    "default_augmentation",
    "make_augmentation",
]
