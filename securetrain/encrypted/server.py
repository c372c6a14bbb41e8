"""The server role: holds the model, never a secret key, and evaluates ciphertexts.

:class:`EncryptedModel` is the model compiled and planned for one packing; its
:meth:`~EncryptedModel.spec` is the public description a client needs (parameters and
layout, no weights). :class:`InferenceServer` is built from that model and a client's
*public* context bytes only: it refuses a context that carries a secret key, checks the
parameters, evaluates requests and returns ciphertext bytes.

Example:
    >>> import torch
    >>> from securetrain.models import build_model
    >>> from securetrain.encrypted.client import EncryptionClient
    >>> model = build_model("he", (1, 8, 8), 10, hidden=4)
    >>> em = EncryptedModel.build(model, "throughput", calibration=torch.rand(8, 1, 8, 8))
    >>> client = EncryptionClient(em.spec())
    >>> server = InferenceServer(em, client.public_context())
    >>> x = torch.rand(3, 1, 8, 8)
    >>> out = client.decrypt(server.evaluate(client.encrypt(x)))
    >>> bool(abs(out - model(x).detach().numpy()).max() < em.plan.estimated_error)
    True
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from securetrain.encrypted.compiler import CompiledModel, compile_model
from securetrain.encrypted.errors import (
    ContextMismatchError,
    PublicContextError,
    WireFormatError,
)
from securetrain.encrypted.fused import FusedProgram
from securetrain.encrypted.keys import check_rotation_keys
from securetrain.encrypted.packing import (
    Group,
    Packing,
    Program,
    fresh_level_check,
    get_packing,
)
from securetrain.encrypted.params import EncryptionPlan
from securetrain.encrypted.planner import plan
from securetrain.encrypted.wire import (
    REQUEST,
    RESPONSE,
    context_fingerprint,
    pack_groups,
    spec_fingerprint,
    unpack_groups,
)
from securetrain.errors import EncryptionError
from securetrain.modes import unwrap

if TYPE_CHECKING:
    from securetrain.encrypted.throughput import BlobStream

logger = logging.getLogger(__name__)

SPEC_FORMAT = "securetrain.encrypted/1"


@dataclass
class EncryptedModel:
    """A compiled model with its plan and server program for one packing."""

    compiled: CompiledModel
    plan: EncryptionPlan

    def __post_init__(self) -> None:
        self.packing: Packing = get_packing(self.plan.mode)
        self.packing.check_plan(self.plan)
        self.program: Program = self.packing.program(self.compiled, self.plan)
        self.layout: dict[str, Any] = self.packing.layout(self.compiled, self.plan)
        # streamed throughput chunks: the first layers on residues where the model and plan allow
        self.fused: FusedProgram | None = FusedProgram.build(self.compiled, self.plan)
        self._spec = {
            "format": SPEC_FORMAT,
            "model": self.compiled.name,
            "mode": self.plan.mode,
            "input_shape": list(self.compiled.input_shape),
            "plan": self.plan.to_dict(),
            "layout": self.layout,
        }
        self.spec_id = spec_fingerprint(self._spec)

    @classmethod
    def build(
        cls,
        model: nn.Module,
        mode: str = "throughput",
        *,
        calibration: np.ndarray | torch.Tensor | None = None,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
        **plan_options: Any,
    ) -> EncryptedModel:
        """Compile ``model``, measure value ranges on ``calibration`` and plan ``mode``.

        One sample's shape is ``input_shape``, else ``model.input_shape`` when the model
        declares one of the calibration samples' size, else the shape of the calibration
        batch's samples ``(B, *shape)``; a calibration batch that does not match a given
        ``input_shape`` is refused.
        """
        declared = getattr(unwrap(model), "input_shape", None)  # what compile_model itself reads
        input_shape = _input_shape(input_shape, calibration, declared)
        compiled = compile_model(model, input_shape, calibration=calibration, name=name)
        return cls(compiled, plan(compiled, mode, **plan_options))

    def spec(self) -> dict[str, Any]:
        """The public description a client needs: parameters and layout (no weights); a copy."""
        return copy.deepcopy(self._spec)


def _input_shape(
    input_shape: Sequence[int] | None,
    calibration: np.ndarray | torch.Tensor | None,
    declared: Sequence[int] | None = None,
) -> tuple[int, ...] | None:
    """The shape of one sample: given, declared by the model, or read off the calibration batch."""
    if calibration is None:
        return tuple(int(s) for s in input_shape) if input_shape is not None else None
    if len(calibration.shape) < 2 or calibration.shape[0] < 1:
        raise EncryptionError(
            f"calibration data must be a non-empty batch (B, *input_shape), got shape {tuple(calibration.shape)}"
        )
    from_data = tuple(int(s) for s in calibration.shape[1:])
    if input_shape is None:
        if declared is not None and math.prod(int(s) for s in declared) == math.prod(from_data):
            return tuple(int(s) for s in declared)
        return from_data
    given = tuple(int(s) for s in input_shape)
    if math.prod(given) != math.prod(from_data) or (len(given) == len(from_data) and given != from_data):
        raise EncryptionError(
            f"input_shape {given} does not match the calibration data's samples {from_data}; "
            "pass calibration data of shape (B, *input_shape) or leave input_shape out"
        )
    return given


@lru_cache(maxsize=32)
def _expected_parms_id(poly_modulus_degree: int, bits: tuple[int, ...]) -> tuple[int, ...]:
    from tenseal import sealapi

    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(poly_modulus_degree)
    parms.set_coeff_modulus(sealapi.CoeffModulus.Create(poly_modulus_degree, list(bits)))
    ctx = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.TC128)
    return tuple(int(v) for v in ctx.key_parms_id())


def load_public_context(data: bytes, plan: EncryptionPlan, *, n_threads: int | None = None) -> Any:
    """Load a client's context from bytes, refusing it unless it is public and matches ``plan``."""
    import tenseal as ts

    if not isinstance(data, (bytes, bytearray)) or not data:
        raise PublicContextError("a public context must be non-empty bytes (context.serialize(save_secret_key=False))")
    try:
        ctx = ts.context_from(bytes(data), n_threads=n_threads)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise PublicContextError(f"the context bytes are not a serialised TenSEAL context ({exc})") from exc
    if ctx.is_private() or ctx.has_secret_key():
        del ctx
        raise PublicContextError(
            "refused: the context carries a secret key. A server must never hold it (it could decrypt every "
            "input and result); the client must send context.serialize(save_secret_key=False)"
        )
    seal = ctx.seal_context().data
    if tuple(int(v) for v in seal.key_parms_id()) != _expected_parms_id(
        plan.poly_modulus_degree, tuple(plan.coeff_mod_bit_sizes)
    ):
        raise ContextMismatchError(
            f"the context's encryption parameters differ from this model's plan (N={plan.poly_modulus_degree}, "
            f"coeff_mod_bit_sizes={list(plan.coeff_mod_bit_sizes)}); build the client from the server's spec"
        )
    try:
        scale = ctx.global_scale
    except ValueError as exc:
        raise PublicContextError("the context has no global scale; set context.global_scale = 2**scale_bits") from exc
    if not np.isclose(scale, plan.scale, rtol=1e-12):
        raise ContextMismatchError(
            f"the context's global scale 2^{np.log2(scale):.2f} differs from the plan's 2^{plan.scale_bits}"
        )
    if not ctx.has_relin_keys():
        raise PublicContextError("the context has no relinearisation keys, which squaring needs")
    if plan.galois_keys and not ctx.has_galois_keys():
        raise PublicContextError(f"the {plan.mode} packing rotates ciphertexts: the context needs Galois keys")
    if not ctx.has_public_key():
        raise PublicContextError("the context has no public key")
    return ctx


class InferenceServer:
    """Evaluates one client's requests; constructed from public context bytes only."""

    def __init__(self, model: EncryptedModel, public_context: bytes, *, n_threads: int | None = None) -> None:
        self.model = model
        self.context = load_public_context(public_context, model.plan, n_threads=n_threads)
        steps = model.layout.get("galois_steps")
        if model.plan.galois_keys and steps:
            check_rotation_keys(self.context, steps, model.plan.poly_modulus_degree)
        self.context_id = context_fingerprint(bytes(public_context))

    def open_request(self, request: bytes) -> list[Any]:
        """Parse and check a request; the loaded groups of ciphertexts."""
        header, groups = unpack_groups(request, self.context, expect_kind=REQUEST)
        self._check_header(header)
        for gi, g in enumerate(groups):
            self.model.packing.check_group(self.model.layout, g)
            for vi, v in enumerate(g.vectors):
                fresh_level_check(v, self.model.plan.depth, self.model.plan.scale, f"ciphertext {vi} of group {gi}")
        return groups

    def _check_header(self, header: dict[str, Any]) -> None:
        if header.get("context") != self.context_id:
            raise ContextMismatchError(
                f"the request's ciphertexts were made under context {str(header.get('context'))[:12]}..., but this "
                f"server holds context {self.context_id[:12]}...: encrypt with the context you registered"
            )
        if header.get("spec") != self.model.spec_id:
            raise ContextMismatchError(
                "the request was built for another model or plan (spec fingerprint differs); fetch the server's spec again"
            )
        if header.get("mode") != self.model.plan.mode:
            raise WireFormatError(
                f"request mode {header.get('mode')!r} differs from the server's {self.model.plan.mode!r}"
            )

    def open_stream(self, header: dict[str, Any]) -> StreamEvaluation:
        """Start evaluating a streamed request (throughput packing) from its header."""
        from securetrain.encrypted.throughput import SealBlobStream, ThroughputProgram

        self._check_header(header)
        program = self.model.program
        if not isinstance(program, ThroughputProgram):
            raise WireFormatError(f"streamed requests are for the throughput packing, not {self.model.plan.mode}")
        samples, features = header.get("samples"), header.get("features")
        slots, expected = int(self.model.layout["slots"]), int(self.model.layout["features"])
        if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= slots:
            raise WireFormatError(f"a streamed chunk holds 1 to {slots} samples, got {samples!r}")
        if features != expected:
            raise WireFormatError(
                f"a streamed chunk carries one ciphertext per input feature ({expected}), got {features!r}"
            )
        fused = self.model.fused
        stream = (
            fused.open(self.context, samples)
            if fused is not None
            else SealBlobStream(program.open(self.context, samples))
        )
        return StreamEvaluation(self, stream)

    def evaluate(self, request: bytes) -> bytes:
        """Evaluate a request (bytes) and return the response (bytes)."""
        groups = self.open_request(request)
        results = []
        for g in groups:
            with _level_errors(self.model.plan.depth):
                results.append(self.model.program.run(self.context, g))
        return self.respond(results)

    def respond(self, groups: list[Group]) -> bytes:
        """The response message for result groups."""
        header = {"mode": self.model.plan.mode, "context": self.context_id, "spec": self.model.spec_id}
        return pack_groups(RESPONSE, header, groups)


@contextmanager
def _level_errors(depth: int) -> Iterator[None]:
    try:
        yield
    except ValueError as exc:
        if "scale out of bounds" in str(exc) or "end of modulus switching chain" in str(exc):
            raise EncryptionError(
                "the evaluation ran out of modulus levels; the plan does not match the model "
                f"(depth {depth}); re-plan with securetrain.encrypted.plan"
            ) from exc
        raise


class StreamEvaluation:
    """One streamed chunk on the server: :meth:`feed` each ciphertext blob, then :meth:`finish`.

    Each blob is loaded, checked (size, level, scale) and folded into the chunk's partial sums
    at once; nothing but the open partial sums stays in memory.
    """

    def __init__(self, server: InferenceServer, stream: BlobStream) -> None:
        self.server = server
        self.stream = stream

    def feed(self, blob: bytes) -> None:
        with _level_errors(self.server.model.plan.depth):
            self.stream.feed_blob(blob)

    def finish(self) -> bytes:
        """The response (one group) once every feature's ciphertext has been fed."""
        expected = int(self.server.model.layout["features"])
        if self.stream.received != expected:
            raise WireFormatError(
                f"the streamed request ended after {self.stream.received} of {expected} input ciphertexts"
            )
        return self.server.respond([self.stream.finish()])


__all__ = ["SPEC_FORMAT", "EncryptedModel", "InferenceServer", "StreamEvaluation", "load_public_context"]
