"""Encrypted inference through TenSEAL (CKKS): validator, planner, compiler, two packings,
client and server roles, an HTTP service.

The pieces, in the order a model goes through them:

- :func:`validate` / :func:`make_he_friendly`: which layers cannot run under CKKS and the fix;
- :func:`compile_model`: the model as a chain of affine maps and squares;
- :func:`plan`: CKKS parameters (an :class:`EncryptionPlan`, pure data) at 128-bit security
  from the depth and value range;
- packings ``"throughput"`` (batch across slots) and ``"latency"`` (one sample per ciphertext),
  registered in :data:`PACKINGS` when this package is imported; each prices a layout in one
  :meth:`Packing.cost <securetrain.encrypted.packing.Packing.cost>` (a :class:`LayoutCost`);
- :class:`EncryptedModel` + :class:`InferenceServer` (server, public context only) and
  :class:`EncryptionClient` (keys, encrypt, decrypt);
- :func:`serve` / :class:`RemoteClient`: the same over HTTP (Starlette on uvicorn; per-client
  contexts behind secret tokens, quotas, read timeouts);
- :func:`evaluate_encrypted`: the report's ``encrypted`` section for a model and data.

Importing the package registers the two packings (light modules: no TenSEAL, no torch);
everything else (TenSEAL included) is imported when first used.

Example:
    >>> sorted(PACKINGS)
    ['latency', 'throughput']
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

# The packing protocol and registry, and the two built-in packings, which register themselves.
from securetrain.encrypted import latency as _latency  # noqa: F401
from securetrain.encrypted import throughput as _throughput  # noqa: F401
from securetrain.encrypted.packing import PACKINGS, LayoutCost, Packing, get_packing

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
    "EncryptionPlan": "params",
    "MAX_COEFF_BITS_128": "params",
    "plan": "planner",
    "EncryptedModel": "server",
    "InferenceServer": "server",
    "EncryptionClient": "client",
    "decrypt": "client",
    "evaluate_encrypted": "evaluate",
    "EncryptedInferenceService": "http",
    "RemoteClient": "remote",
    "make_app": "http",
    "ContextStore": "contexts",
    "serve": "http",
    "start_server": "http",
    "HECNN2": "models",
    "PublicContextError": "errors",
    "ContextMismatchError": "errors",
    "SecretKeyRequiredError": "errors",
    "WireFormatError": "errors",
    "ServiceError": "errors",
    "UnknownContextError": "errors",
    "AuthenticationError": "errors",
    "QuotaExceededError": "errors",
    "ServiceFullError": "errors",
    "PayloadTooLarge": "errors",
    "RequestTimeoutError": "errors",
}

if TYPE_CHECKING:
    from securetrain.encrypted.activations import PolyActivation, fit_polynomial
    from securetrain.encrypted.client import EncryptionClient, decrypt
    from securetrain.encrypted.compiler import CompiledModel, compile_model
    from securetrain.encrypted.contexts import ContextStore
    from securetrain.encrypted.errors import (
        AuthenticationError,
        ContextMismatchError,
        PayloadTooLarge,
        PublicContextError,
        QuotaExceededError,
        RequestTimeoutError,
        SecretKeyRequiredError,
        ServiceError,
        ServiceFullError,
        UnknownContextError,
        WireFormatError,
    )
    from securetrain.encrypted.evaluate import evaluate_encrypted
    from securetrain.encrypted.http import (
        EncryptedInferenceService,
        make_app,
        serve,
        start_server,
    )
    from securetrain.encrypted.layers import ChannelAffine, register_layer
    from securetrain.encrypted.models import HECNN2
    from securetrain.encrypted.params import MAX_COEFF_BITS_128, EncryptionPlan
    from securetrain.encrypted.planner import plan
    from securetrain.encrypted.remote import RemoteClient
    from securetrain.encrypted.server import EncryptedModel, InferenceServer
    from securetrain.encrypted.validator import (
        ACTIVATION_REPLACEMENTS,
        FineTune,
        Issue,
        is_he_friendly,
        make_he_friendly,
        validate,
    )

__all__ = [
    "ACTIVATION_REPLACEMENTS",
    "AuthenticationError",
    "ContextStore",
    "PayloadTooLarge",
    "QuotaExceededError",
    "RequestTimeoutError",
    "ServiceError",
    "ServiceFullError",
    "UnknownContextError",
    "make_app",
    "HECNN2",
    "MAX_COEFF_BITS_128",
    "PACKINGS",
    "ChannelAffine",
    "CompiledModel",
    "ContextMismatchError",
    "EncryptedInferenceService",
    "EncryptedModel",
    "EncryptionClient",
    "EncryptionPlan",
    "FineTune",
    "InferenceServer",
    "Issue",
    "LayoutCost",
    "Packing",
    "PolyActivation",
    "PublicContextError",
    "RemoteClient",
    "SecretKeyRequiredError",
    "WireFormatError",
    "compile_model",
    "decrypt",
    "evaluate_encrypted",
    "fit_polynomial",
    "get_packing",
    "is_he_friendly",
    "make_he_friendly",
    "plan",
    "register_layer",
    "serve",
    "start_server",
    "validate",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'securetrain.encrypted' has no attribute {name!r}")
    return getattr(importlib.import_module(f"securetrain.encrypted.{module}"), name)
