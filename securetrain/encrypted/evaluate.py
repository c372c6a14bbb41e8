"""Run encrypted inference end to end (client -> bytes -> server -> bytes -> client) and
measure it: the report's ``encrypted`` section.

Example:
    >>> import torch
    >>> from securetrain.models import build_model
    >>> section = evaluate_encrypted(build_model("he", (1, 8, 8), 10, hidden=4), torch.rand(6, 1, 8, 8))
    >>> section["mode"], section["samples"], section["max_abs_error"] <= section["tolerance"]
    ('throughput', 6, True)
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from securetrain.encrypted.client import EncryptionClient
from securetrain.encrypted.server import EncryptedModel, InferenceServer
from securetrain.encrypted.wire import REQUEST, StreamParser, decode_header
from securetrain.errors import EncryptionError
from securetrain.modes import eval_mode, unwrap
from securetrain.report.sections import EncryptedSection

logger = logging.getLogger(__name__)


def float64_logits(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The plaintext reference: ``model``'s logits on ``x`` computed in float64 in eval mode
    (on a copy: the model itself is untouched).

    Example:
        >>> import torch
        >>> float64_logits(torch.nn.Linear(3, 2), torch.zeros(4, 3)).dtype
        dtype('float64')
    """
    m64 = copy.deepcopy(unwrap(model)).double()
    with eval_mode(m64), torch.no_grad():
        logits: np.ndarray = m64(x.double()).reshape(x.shape[0], -1).numpy()
        return logits


def evaluate_encrypted(
    model: nn.Module,
    x: torch.Tensor,
    *,
    mode: str = "throughput",
    samples: int | None = None,
    y: torch.Tensor | None = None,
    input_shape: Sequence[int] | None = None,
    calibration: torch.Tensor | np.ndarray | None = None,
    chunk_size: int | None = None,
    encrypted_model: EncryptedModel | None = None,
    progress: bool = False,
    **plan_options: Any,
) -> EncryptedSection:
    """Encrypt ``x`` (the first ``samples`` rows), evaluate ``model`` on the ciphertexts
    through real client and server objects and byte serialisation, decrypt, and compare
    with the plaintext model (float64). Returns the report's ``encrypted`` section.

    ``calibration`` (default: ``x``) sets the value range the planner sizes the modulus
    for. Timings are wall-clock on this machine: ``latency_s`` is one request's round trip
    (throughput: one chunk of up to ``slots`` samples; latency: one sample) and
    ``per_sample_s`` the total over the number of samples; in throughput mode
    ``per_sample_full_slots_s`` divides a chunk's time by the slot count, since a chunk
    costs the same however many of its slots are used.

    ``encrypted_model``: an :class:`EncryptedModel` already built (and planned) for ``model``,
    e.g. to estimate its cost first (:func:`securetrain.encrypted.estimate.estimate_plan`);
    ``progress``: show a progress bar over the requests on stderr.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] == 0:
        raise EncryptionError("x must be a non-empty tensor of shape (batch, *input_shape)")
    n = x.shape[0] if samples is None else int(samples)
    if not 1 <= n <= x.shape[0]:
        raise EncryptionError(f"samples must be between 1 and {x.shape[0]}, got {samples}")
    xs = x[:n]
    shape = tuple(input_shape) if input_shape is not None else tuple(x.shape[1:])
    t0 = time.perf_counter()
    if encrypted_model is not None:
        if encrypted_model.plan.mode != mode:
            raise EncryptionError(f"encrypted_model was planned for {encrypted_model.plan.mode!r}, not {mode!r}")
        em = encrypted_model
    else:
        em = EncryptedModel.build(
            model, mode, calibration=xs if calibration is None else calibration, input_shape=shape, **plan_options
        )
    t1 = time.perf_counter()
    client = EncryptionClient(em.spec())
    t2 = time.perf_counter()
    public = client.public_context()
    server = InferenceServer(em, public)

    if mode == "latency":
        batches = [xs[i : i + 1] for i in range(n)]
    else:
        size = em.plan.slots if chunk_size is None else int(chunk_size)
        batches = [xs[i : i + size] for i in range(0, n, size)]
    outs = []
    enc_s = eval_s = dec_s = 0.0
    round_trips = []
    req_bytes = resp_bytes = 0
    ct_bytes = None
    for batch in tqdm(batches, desc=f"encrypted {mode}", unit="request", disable=not progress, leave=False):
        a = time.perf_counter()
        if mode == "throughput":  # streamed: neither side holds the chunk's request
            nbytes, first, resp, serve_s = _stream_chunk(client, server, batch)
            b = time.perf_counter() - serve_s
            c = time.perf_counter()
            ct_bytes = first if ct_bytes is None else ct_bytes
        else:
            req = client.encrypt(batch, chunk_size=chunk_size)
            b = time.perf_counter()
            resp = server.evaluate(req)
            c = time.perf_counter()
            nbytes = len(req)
            if ct_bytes is None:
                ct_bytes = int(decode_header(req, expect_kind=REQUEST)[0]["sizes"][0])
        outs.append(client.decrypt(resp))
        d = time.perf_counter()
        enc_s, eval_s, dec_s = enc_s + (b - a), eval_s + (c - b), dec_s + (d - c)
        round_trips.append(d - a)
        req_bytes += nbytes
        resp_bytes += len(resp)
    enc = np.concatenate(outs, axis=0)
    ref = float64_logits(model, xs)
    total = enc_s + eval_s + dec_s
    agreement = float(np.mean(enc.argmax(axis=1) == ref.argmax(axis=1)))
    err = float(np.max(np.abs(enc - ref)))
    plan = em.plan
    section: dict[str, Any] = {
        "scheme": "CKKS",
        "library": f"TenSEAL {_tenseal_version()}",
        "poly_modulus_degree": plan.poly_modulus_degree,
        "coeff_mod_bit_sizes": list(plan.coeff_mod_bit_sizes),
        "scale_bits": plan.scale_bits,
        "security_bits": plan.security_bits,
        "depth": plan.depth,
        "mode": plan.mode,
        "variant": plan.variant,
        "agreement": agreement,
        "max_abs_error": err,
        "tolerance": plan.estimated_error,
        "within_tolerance": bool(err <= plan.estimated_error),
        "latency_s": float(np.mean(round_trips)),
        "per_sample_s": total / n,
        "samples": n,
        "slots": plan.slots,
        "requests": len(batches),
        "ciphertext_bytes": int(ct_bytes or 0),
        "public_context_bytes": len(public),
        "galois_keys": plan.galois_keys,
        "request_bytes_per_sample": req_bytes / n,
        "response_bytes_per_sample": resp_bytes / n,
        "value_bound": plan.value_bound,
        "int_bits": plan.int_bits,
        "timing": {
            "compile_plan_s": t1 - t0,
            "keygen_s": t2 - t1,
            "encrypt_s": enc_s,
            "evaluate_s": eval_s,
            "decrypt_s": dec_s,
        },
        "layers": em.compiled.summary(),
        "notes": list(plan.notes),
    }
    if mode != "latency":
        section["per_sample_full_slots_s"] = float(np.mean(round_trips)) / plan.slots
    if y is not None:
        ys = y[:n].numpy()
        section["encrypted_accuracy"] = float(np.mean(enc.argmax(axis=1) == ys))
        section["plaintext_accuracy"] = float(np.mean(ref.argmax(axis=1) == ys))
    out_of_range = int(np.sum(np.abs(enc) > plan.value_bound * 2.0))
    if out_of_range:
        section["out_of_range_outputs"] = out_of_range
        logger.warning(
            "%d decrypted outputs exceed the planned value range; re-plan with wider calibration data", out_of_range
        )
    return EncryptedSection.from_dict(section)


def _tenseal_version() -> str:
    import tenseal

    return str(getattr(tenseal, "__version__", "?"))


def _stream_chunk(client: EncryptionClient, server: InferenceServer, batch: Any) -> tuple[int, int, bytes, float]:
    """One throughput chunk as a streamed request (frames parsed as a service would): its bytes,
    the first ciphertext's bytes, the response and the seconds the server spent."""
    parser = StreamParser()
    evaluation = None
    nbytes, first, serve_s = 0, 0, 0.0
    for piece in client.encrypt_stream(batch):
        nbytes += len(piece)
        blobs = parser.feed(piece)
        t = time.perf_counter()
        if evaluation is None and parser.header is not None:
            evaluation = server.open_stream(parser.header)
        for blob in blobs:
            first = first or len(blob)
            assert evaluation is not None  # frames follow the header
            evaluation.feed(blob)
        serve_s += time.perf_counter() - t
    if evaluation is None:
        raise EncryptionError("the client produced no streamed request")
    t = time.perf_counter()
    resp = evaluation.finish()
    return nbytes, first, resp, serve_s + time.perf_counter() - t


__all__ = ["evaluate_encrypted"]
