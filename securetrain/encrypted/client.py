"""The client role: makes the keys, encrypts inputs, decrypts results. The secret key stays here.

Example:
    >>> import torch
    >>> from securetrain.models import build_model
    >>> from securetrain.encrypted.server import EncryptedModel, InferenceServer
    >>> em = EncryptedModel.build(build_model("he", (1, 8, 8), 10, hidden=4), calibration=torch.rand(8, 1, 8, 8))
    >>> client = EncryptionClient(em.spec())
    >>> server = InferenceServer(em, client.public_context())  # public bytes only
    >>> client.decrypt(server.evaluate(client.encrypt(torch.rand(2, 1, 8, 8)))).shape
    (2, 10)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from securetrain.encrypted.errors import ContextMismatchError, SecretKeyRequiredError
from securetrain.encrypted.keys import public_context_bytes
from securetrain.encrypted.packing import Packing, get_packing
from securetrain.encrypted.params import EncryptionPlan
from securetrain.encrypted.server import SPEC_FORMAT
from securetrain.encrypted.wire import (
    REQUEST,
    RESPONSE,
    context_fingerprint,
    encode_frame,
    encode_stream_head,
    pack_groups,
    spec_fingerprint,
    unpack_groups,
)
from securetrain.errors import EncryptionError


def _features(x: Any, size: int) -> np.ndarray:
    arr = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if arr.ndim < 1 or arr.size == 0 or arr.size % size != 0 or (arr.ndim > 1 and int(np.prod(arr.shape[1:])) != size):
        raise EncryptionError(f"inputs must have {size} features per sample, got shape {tuple(arr.shape)}")
    arr = arr.reshape(-1, size)
    if not np.all(np.isfinite(arr)):
        raise EncryptionError("inputs contain NaN or infinite values")
    return arr


def decrypt(context: Any, spec: dict[str, Any], response: bytes, *, context_id: str | None = None) -> np.ndarray:
    """Decrypt a response with ``context``, which must hold the secret key.

    Raises :class:`SecretKeyRequiredError` for a public context (the server's): only the
    client that made the keys can read results.
    """
    if not context.is_private():
        raise SecretKeyRequiredError(
            "this context holds no secret key, so it cannot decrypt: only the client that generated the keys can "
            "read inputs and results (a server is built from the public context)"
        )
    header, groups = unpack_groups(response, context, expect_kind=RESPONSE)
    if context_id is not None and header.get("context") != context_id:
        raise ContextMismatchError("the response was computed under another context than this client's")
    if header.get("spec") != spec_fingerprint(spec):
        raise ContextMismatchError("the response was computed for another model or plan than this client's spec")
    packing = get_packing(str(spec["mode"]))
    return packing.decrypt(context, spec["layout"], groups)


class EncryptionClient:
    """Makes CKKS keys for a server's spec; encrypts requests and decrypts responses."""

    def __init__(self, spec: dict[str, Any], *, n_threads: int | None = None) -> None:
        import tenseal as ts

        if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
            raise EncryptionError(f"not a securetrain encrypted-inference spec (expected format {SPEC_FORMAT!r})")
        self.spec = spec
        self.spec_id = spec_fingerprint(spec)
        self.plan = EncryptionPlan.from_dict(spec["plan"])
        self.layout: dict[str, Any] = spec["layout"]
        self.packing: Packing = get_packing(self.plan.mode)
        self.packing.check_plan(self.plan)
        if not isinstance(self.layout, dict):
            raise EncryptionError("malformed spec: 'layout' must be an object")
        self.packing.check_layout(self.layout, self.plan)
        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=self.plan.poly_modulus_degree,
            coeff_mod_bit_sizes=list(self.plan.coeff_mod_bit_sizes),
            n_threads=n_threads,
        )
        ctx.global_scale = self.plan.scale
        if not ctx.has_relin_keys():
            ctx.generate_relin_keys()
        steps = self.layout.get("galois_steps")
        self._context = ctx
        if self.plan.galois_keys and steps is None:  # a spec without the steps: every power of two
            ctx.generate_galois_keys()
            self._public: bytes = ctx.serialize(
                save_public_key=True, save_secret_key=False, save_galois_keys=True, save_relin_keys=True
            )
        else:  # Galois keys for the rotations the server's program uses, no others
            self._public = public_context_bytes(ctx, steps if self.plan.galois_keys else None)
        self.context_id = context_fingerprint(self._public)

    @property
    def context(self) -> Any:
        """The private TenSEAL context (holds the secret key: never send it)."""
        return self._context

    def public_context(self) -> bytes:
        """The context without its secret key: what a server gets."""
        return self._public

    def _checked(self, x: Any) -> np.ndarray:
        arr = _features(x, int(self.layout["features"]))
        limit = 2.0 ** (self.plan.int_bits - 1)
        peak = float(np.max(np.abs(arr)))
        if peak > limit:
            raise EncryptionError(
                f"inputs reach {peak:.3g}, beyond the range this plan was made for (|value| <= {limit:g}); values "
                "outside it would overflow silently under CKKS. Ask the server to re-plan with calibration data "
                "that covers such inputs, or rescale them"
            )
        return arr

    def encrypt(self, x: Any, *, chunk_size: int | None = None) -> bytes:
        """Encrypt ``x`` (``(B, *input_shape)`` or ``(B, features)``) into a request."""
        arr = self._checked(x)
        try:
            groups = self.packing.encrypt(self._context, self.layout, arr, chunk_size=chunk_size)
        except ValueError as exc:  # TenSEAL/SEAL encoding errors
            raise EncryptionError(f"TenSEAL could not encrypt the inputs: {exc}") from exc
        header = {"mode": self.plan.mode, "context": self.context_id, "spec": self.spec_id}
        return pack_groups(REQUEST, header, groups)

    def encrypt_stream(self, x: Any) -> Iterator[bytes]:
        """One chunk of ``x`` (at most the slot count of samples) as a streamed request (throughput
        packing): the head, then one frame per input feature, each encrypted only when the
        iteration reaches it, so the request is never held whole (see :mod:`~securetrain.encrypted.wire`).
        """
        from securetrain.encrypted.throughput import ThroughputPacking

        packing = self.packing
        if not isinstance(packing, ThroughputPacking):
            raise EncryptionError(f"streamed requests are for the throughput packing, not {self.plan.mode}")
        arr = self._checked(x)
        yield encode_stream_head(
            {
                "mode": self.plan.mode,
                "context": self.context_id,
                "spec": self.spec_id,
                "samples": int(arr.shape[0]),
                "features": int(arr.shape[1]),
            }
        )
        try:
            for blob in packing.encrypt_features(self._context, self.layout, arr):
                yield encode_frame(blob)
        except ValueError as exc:  # TenSEAL/SEAL encoding errors
            raise EncryptionError(f"TenSEAL could not encrypt the inputs: {exc}") from exc

    def decrypt(self, response: bytes) -> np.ndarray:
        """Decrypt a response into logits ``(B, outputs)``."""
        return decrypt(self._context, self.spec, response, context_id=self.context_id)


__all__ = ["EncryptionClient", "decrypt"]
