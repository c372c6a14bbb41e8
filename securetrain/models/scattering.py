"""A fixed 2-d wavelet scattering transform (Morlet wavelets, no trained parameters).

Scattering coefficients of order 0, 1 and 2 of an image ``x`` (Mallat 2012; Bruna and
Mallat 2013), at ``J`` scales and ``L`` orientations::

    S0 x              = x * phi_J                         (subsampled by 2**J)
    S1 x [j1, l1]     = |x * psi_{j1,l1}| * phi_J
    S2 x [j1,l1,j2,l2] = ||x * psi_{j1,l1}| * psi_{j2,l2}| * phi_J     (j1 < j2)

``psi_{j,l}`` is a Morlet wavelet (a Gabor filter with its mean removed) at scale ``2**j``
and angle ``l * pi / L``, ``phi_J`` a Gaussian low-pass filter. The filter bank follows
the design of Kymatio's ``Scattering2D`` (same filters, orientation order and reflect
padding), so the coefficients are interchangeable with Kymatio's; the convolutions here
run at full resolution (Kymatio subsamples between layers), which gives the same values
up to that subsampling's aliasing (checked in the tests). The transform is what
Tramer and Boneh (2021, "Differentially private learning needs better features") put in
front of small private models: its features cost no privacy budget (nothing is learned
from data) and make the trained part small.

An input of ``C`` channels and size ``H x W`` gives ``C * K`` channels of size
``floor(H / 2**J) x floor(W / 2**J)``, with ``K = 1 + J*L + L*L*J*(J-1)/2`` at order 2
(``1 + J*L`` at order 1): 81 channels of 7x7 for 28x28 MNIST at ``J=2``.

Example:
    >>> import torch
    >>> from securetrain.models.scattering import Scattering2D
    >>> s = Scattering2D((28, 28), J=2)
    >>> s(torch.zeros(3, 1, 28, 28)).shape, s.paths
    (torch.Size([3, 81, 7, 7]), 81)
    >>> sum(p.numel() for p in s.parameters())
    0
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from securetrain.errors import ConfigurationError, ModelError


def gabor_2d(M: int, N: int, sigma: float, theta: float, xi: float, slant: float = 1.0) -> torch.Tensor:
    """A Gabor filter on an ``M x N`` periodic grid (float64 complex, in space).

    ``g(u) = exp(-u^T A u / 2 + i xi (u_0 cos(theta) + u_1 sin(theta))) / (2 pi sigma^2 / slant)``
    with ``A`` the Gaussian envelope's curvature (``1 / sigma^2`` along ``theta``, ``slant^2 /
    sigma^2`` across it), summed over the 5 x 5 nearest periods so the filter is periodic.
    """
    c, s = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    curv = rot @ torch.diag(torch.tensor([1.0, slant * slant], dtype=torch.float64)) @ rot.T / (2 * sigma * sigma)
    out = torch.zeros(M, N, dtype=torch.complex128)
    rows = torch.arange(M, dtype=torch.float64)
    cols = torch.arange(N, dtype=torch.float64)
    for ex in range(-2, 3):
        for ey in range(-2, 3):
            u0, u1 = torch.meshgrid(rows + ex * M, cols + ey * N, indexing="ij")
            quad = curv[0, 0] * u0 * u0 + (curv[0, 1] + curv[1, 0]) * u0 * u1 + curv[1, 1] * u1 * u1
            phase = xi * (u0 * c + u1 * s)
            out += torch.exp(torch.complex(-quad, phase))
    return out / (2 * math.pi * sigma * sigma / slant)


def morlet_2d(M: int, N: int, sigma: float, theta: float, xi: float, slant: float) -> torch.Tensor:
    """A Morlet wavelet: the Gabor filter minus its envelope times the constant that makes the sum zero."""
    wave = gabor_2d(M, N, sigma, theta, xi, slant)
    envelope = gabor_2d(M, N, sigma, theta, 0.0, slant)
    return wave - (wave.sum() / envelope.sum()) * envelope


def _check_int(option: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ConfigurationError(f"scattering: option {option!r} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def periodize(u_hat: torch.Tensor, k: int) -> torch.Tensor:
    """Subsample by ``k`` in space, given and returned in Fourier: the mean of the ``k x k`` aliases."""
    if k == 1:
        return u_hat
    M, N = u_hat.shape[-2:]
    m, n = M // k, N // k
    r = torch.view_as_real(u_hat)  # sums of real slices: much faster than a strided complex mean
    rows = r[..., :m, :, :]
    for i in range(1, k):
        rows = rows + r[..., i * m : (i + 1) * m, :, :]
    out = rows[..., :n, :]
    for i in range(1, k):
        out = out + rows[..., i * n : (i + 1) * n, :]
    return torch.view_as_complex(out.div_(k * k).contiguous())


def crop_spectrum(f_hat: torch.Tensor, k: int) -> torch.Tensor:
    """A filter's transform at ``1/k`` of the resolution: its frequencies below the new Nyquist."""
    M, N = f_hat.shape[-2:]
    m, n = M // k, N // k
    rows = torch.cat([torch.arange(m // 2), torch.arange(M - (m - m // 2), M)])
    cols = torch.cat([torch.arange(n // 2), torch.arange(N - (n - n // 2), N)])
    return f_hat[..., rows[:, None], cols[None, :]]


class Scattering2D(nn.Module):
    """The scattering transform of images of size ``shape`` (``(H, W)``), ``J`` scales, ``L`` angles.

    Takes ``(B, H, W)`` or ``(B, C, H, W)`` and returns ``(B, C * paths, floor(H/2**J),
    floor(W/2**J))``, the coefficients ordered as Kymatio orders them (order 0, then order 1
    by scale and angle, then order 2). Each wavelet modulus is computed at the resolution
    its wavelet's band allows (``2**-j``), as in Kymatio. The filters are buffers that are
    not saved with the model (they are rebuilt from the options); nothing is trained.
    """

    def __init__(self, shape: Sequence[int], J: int = 2, L: int = 8, order: int = 2) -> None:
        super().__init__()
        J, L = _check_int("J", J, 1), _check_int("L", L, 1)
        if order not in (1, 2) or isinstance(order, bool):
            raise ConfigurationError(f"scattering: option 'order' must be 1 or 2, got {order!r}")
        if len(shape) != 2:
            raise ModelError(f"scattering needs an image size (height, width); got {tuple(shape)}")
        H, W = (int(s) for s in shape)
        step = 2**J
        Mp, Np = ((H + step) // step + 1) * step, ((W + step) // step + 1) * step
        self.pad = ((Np - W) // 2, (Np - W + 1) // 2, (Mp - H) // 2, (Mp - H + 1) // 2)
        if max(self.pad[2:]) >= H or max(self.pad[:2]) >= W:
            raise ModelError(
                f"scattering with J={J} needs images larger than {max(self.pad)} pixels a side; got {H}x{W}: "
                "choose a smaller J"
            )
        self.shape, self.J, self.L, self.order = (H, W), J, L, int(order)
        psi = [
            morlet_2d(Mp, Np, 0.8 * 2**j, (int(L - L / 2 - 1) - t) * math.pi / L, 0.75 * math.pi / 2**j, 4.0 / L)
            for j in range(J)
            for t in range(L)
        ]
        # in Fourier; the filters are (nearly) symmetric, so their transforms are taken as real, as Kymatio does
        psi_hat = torch.stack([torch.fft.fft2(p).real for p in psi])
        phi_hat = torch.fft.fft2(gabor_2d(Mp, Np, 0.8 * 2 ** (J - 1), 0.0, 0.0)).real
        for res in range(J):  # the filters at resolution 2**-res
            self.register_buffer(f"psi_hat_{res}", crop_spectrum(psi_hat, 2**res).float(), persistent=False)
            self.register_buffer(f"phi_hat_{res}", crop_spectrum(phi_hat, 2**res).float(), persistent=False)
        self.paths = scattering_paths(J, L, self.order)
        self.out_size = (H // step, W // step)

    def _psi(self, res: int, j: int) -> torch.Tensor:
        """The ``L`` wavelets of scale ``j`` at resolution ``2**-res``."""
        return self.get_buffer(f"psi_hat_{res}")[j * self.L : (j + 1) * self.L]

    def _low(self, u_hat: torch.Tensor, res: int) -> torch.Tensor:
        """Low-pass ``u`` (given in Fourier at resolution ``2**-res``), subsample to ``2**-J``, drop the border."""
        s: torch.Tensor = torch.fft.ifft2(
            periodize(u_hat * self.get_buffer(f"phi_hat_{res}"), 2 ** (self.J - res))
        ).real
        return s[..., 1:-1, 1:-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.shape:
            raise ModelError(
                f"scattering expects (batch, channels, {self.shape[0]}, {self.shape[1]}); got {tuple(x.shape)}"
            )
        B, C = x.shape[:2]
        n = B * C
        x_hat = torch.fft.fft2(F.pad(x.reshape(n, 1, *self.shape), self.pad, mode="reflect")[:, 0])
        first: list[torch.Tensor] = []
        second: list[torch.Tensor] = []
        for j1 in range(self.J):
            u1 = torch.fft.ifft2(periodize(x_hat.unsqueeze(1) * self._psi(0, j1), 2**j1)).abs()
            u1_hat = torch.fft.fft2(u1)  # (n, L, M / 2**j1, N / 2**j1)
            first.append(self._low(u1_hat, j1))
            if self.order == 2 and j1 + 1 < self.J:
                per_j2 = []
                for j2 in range(j1 + 1, self.J):
                    prod = periodize(u1_hat.unsqueeze(2) * self._psi(j1, j2), 2 ** (j2 - j1))
                    per_j2.append(self._low(torch.fft.fft2(torch.fft.ifft2(prod).abs()), j2))
                second.append(torch.cat(per_j2, dim=2).flatten(1, 2))
        s = torch.cat([self._low(x_hat, 0).unsqueeze(1), *first, *second], dim=1)
        return s.reshape(B, C * self.paths, *self.out_size)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, J={self.J}, L={self.L}, order={self.order}"


def scattering_paths(J: int, L: int, order: int) -> int:
    """How many channels one input channel becomes: ``1 + J*L`` (+ ``L*L*J*(J-1)/2`` at order 2).

    Example:
        >>> scattering_paths(2, 8, 2), scattering_paths(1, 8, 2)
        (81, 9)
    """
    return 1 + J * L + (L * L * J * (J - 1) // 2 if order == 2 else 0)


__all__ = ["Scattering2D", "gabor_2d", "morlet_2d", "scattering_paths"]
