"""Perturbation norms: distance, projection onto the ball, random points in the ball.

Two norms are supported, named as in the report's robustness section: ``"linf"`` (the
largest change of any single input value) and ``"l2"`` (the Euclidean length of the
perturbation, over all input values of a sample). Epsilons are in input units.

Example:
    >>> import torch
    >>> x = torch.zeros(1, 4)
    >>> project(torch.full((1, 4), 0.5), x, 0.1, "linf")
    tensor([[0.1000, 0.1000, 0.1000, 0.1000]])
    >>> float(distance(project(torch.ones(1, 4), x, 1.0, "l2"), x, "l2"))
    1.0
"""

from __future__ import annotations

import math
from typing import Literal, cast, get_args

import torch

from securetrain.errors import AttackError

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = get_args(Norm)


def check_norm(norm: str) -> Norm:
    """Return ``norm`` if it is a supported norm name, else raise :class:`AttackError`."""
    if norm not in NORMS:
        raise AttackError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")
    return cast("Norm", norm)  # checked against NORMS above


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def distance(a: torch.Tensor, b: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-sample ``norm`` of ``a - b``, shape ``(batch,)``."""
    d = (a - b).flatten(1)
    if norm == "linf":
        return d.abs().amax(1) if d.shape[1] else d.new_zeros(d.shape[0])
    l2: torch.Tensor = d.norm(p=2, dim=1)
    return l2


def project(candidate: torch.Tensor, origin: torch.Tensor, epsilon: float, norm: Norm) -> torch.Tensor:
    """The point of the ``epsilon``-ball around ``origin`` nearest to ``candidate`` (linf), or
    ``candidate``'s perturbation scaled down to length ``epsilon`` (l2)."""
    delta = candidate - origin
    if norm == "linf":
        return origin + delta.clamp(-epsilon, epsilon)
    norms = delta.flatten(1).norm(p=2, dim=1)
    factor = torch.clamp(epsilon / norms.clamp_min(1e-12), max=1.0)
    return origin + delta * _expand(factor, delta)


def normalize_step(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """The steepest-ascent direction of unit ``norm``: ``sign(grad)`` (linf) or ``grad / ||grad||_2``."""
    if norm == "linf":
        return grad.sign()
    norms = grad.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
    return grad / _expand(norms, grad)


def random_in_ball(like: torch.Tensor, epsilon: float, norm: Norm) -> torch.Tensor:
    """Perturbations drawn uniformly from the ``epsilon``-ball (global torch RNG)."""
    if norm == "linf":
        return torch.empty_like(like).uniform_(-epsilon, epsilon)
    n, d = like.shape[0], like[0].numel()
    direction = random_on_sphere(like, 1.0, norm)
    radius = torch.rand(n, device=like.device, dtype=like.dtype).pow(1.0 / max(d, 1)) * epsilon
    return direction * _expand(radius, like)


def random_on_sphere(like: torch.Tensor, epsilon: float, norm: Norm) -> torch.Tensor:
    """Perturbations of ``norm`` exactly ``epsilon``: random sign corners (linf) or a uniform
    direction (l2)."""
    if norm == "linf":
        return torch.randint_like(like, 0, 2).mul_(2).sub_(1).mul_(epsilon)
    g = torch.randn_like(like)
    norms = g.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
    return g * _expand(epsilon / norms, g)


def diameter(bounds: tuple[float, float], sample_shape: torch.Size | tuple[int, ...], norm: Norm) -> float:
    """The largest possible perturbation inside the input box: any point of the box is reachable."""
    lo, hi = bounds
    if norm == "linf":
        return float(hi - lo)
    return float(hi - lo) * math.sqrt(max(1, math.prod(sample_shape)))
