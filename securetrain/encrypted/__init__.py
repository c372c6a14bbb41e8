"""Encrypted inference through TenSEAL (CKKS): validator, planner, compiler, two packings,
client and server roles, an HTTP service.

The pieces, in the order a model goes through them:

- :func:`validate` / :func:`make_he_friendly`: which layers cannot run under CKKS and the fix;
- :func:`compile_model`: the model as a chain of affine maps and squares;
- :func:`plan`: CKKS parameters at 128-bit security from the depth and value range;
- packings ``"throughput"`` (batch across slots) and ``"latency"`` (one sample per ciphertext);
- :class:`EncryptedModel` + :class:`InferenceServer` (server, public context only) and
  :class:`EncryptionClient` (keys, encrypt, decrypt);
- :func:`serve` / :class:`RemoteClient`: the same over HTTP;
- :func:`evaluate_encrypted`: the report's ``encrypted`` section for a model and data.

Nothing (TenSEAL included) is imported until used.

Example:
    >>> import torch
    >>> from securetrain.models import build_model
    >>> from securetrain import encrypted
    >>> model = build_model("he", (1, 8, 8), 10, hidden=4)
    >>> section = encrypted.evaluate_encrypted(model, torch.rand(8, 1, 8, 8))
    >>> section["scheme"], section["security_bits"], section["agreement"]
    ('CKKS', 128, 1.0)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "PolyActivation": "activations",
    "fit_polynomial": "activations",
    "ChannelAffine": "layers",
    "register_layer": "layers",
    "Issue": "validator",
    "FineTune": "validator",
    "validate": "validator",
    "is_he_friendly": "validator",
    "make_he_friendly": "validator",
    "ACTIVATION_REPLACEMENTS": "validator",
    "CompiledModel": "compiler",
    "compile_model": "compiler",
    "EncryptionPlan": "planner",
    "plan": "planner",
    "MAX_COEFF_BITS_128": "planner",
    "PACKINGS": "packing",
    "get_packing": "packing",
    "EncryptedModel": "server",
    "InferenceServer": "server",
    "EncryptionClient": "client",
    "decrypt": "client",
    "evaluate_encrypted": "evaluate",
    "EncryptedInferenceService": "http",
    "RemoteClient": "http",
    "serve": "http",
    "start_server": "http",
    "HECNN2": "models",
    "PublicContextError": "errors",
    "ContextMismatchError": "errors",
    "SecretKeyRequiredError": "errors",
    "WireFormatError": "errors",
}

if TYPE_CHECKING:
    from securetrain.encrypted.activations import PolyActivation, fit_polynomial
    from securetrain.encrypted.client import EncryptionClient, decrypt
    from securetrain.encrypted.compiler import CompiledModel, compile_model
    from securetrain.encrypted.errors import (
        ContextMismatchError,
        PublicContextError,
        SecretKeyRequiredError,
        WireFormatError,
    )
    from securetrain.encrypted.evaluate import evaluate_encrypted
    from securetrain.encrypted.http import EncryptedInferenceService, RemoteClient, serve, start_server
    from securetrain.encrypted.layers import ChannelAffine, register_layer
    from securetrain.encrypted.models import HECNN2
    from securetrain.encrypted.packing import PACKINGS, get_packing
    from securetrain.encrypted.planner import MAX_COEFF_BITS_128, EncryptionPlan, plan
    from securetrain.encrypted.server import EncryptedModel, InferenceServer
    from securetrain.encrypted.validator import (
        ACTIVATION_REPLACEMENTS,
        FineTune,
        Issue,
        is_he_friendly,
        make_he_friendly,
        validate,
    )

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'securetrain.encrypted' has no attribute {name!r}")
    return getattr(importlib.import_module(f"securetrain.encrypted.{module}"), name)
