"""Safe, atomic storage of weights and training state in safetensors files.

Nested state (optimizer state, RNG states, defense states) is split into tensors, stored
as safetensors tensors, and a JSON skeleton stored in the file's metadata. Nothing is
ever unpickled: a pickle or ``torch.save`` file is refused with a clear error.

Example:
    >>> import tempfile, pathlib, torch
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "state.safetensors"
    >>> save_state(p, {"w": torch.ones(2), "step": 3, "opt": {0: {"lr": 0.1}}})
    >>> s = load_state(p)
    >>> s["step"], s["opt"][0]["lr"], s["w"].tolist()
    (3, 0.1, [1.0, 1.0])
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

import torch

from securetrain.errors import CheckpointError
from securetrain.io import atomic_write_bytes

_META_KEY = "securetrain"
_FORMAT = "securetrain.state/1"


def flatten_state(obj: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split ``obj`` into ``(tensors, skeleton)``; the skeleton is JSON-serialisable."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(o: Any) -> Any:
        if isinstance(o, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = o.detach().cpu().contiguous().clone()
            return {"__tensor__": key}
        if isinstance(o, dict):
            if all(isinstance(k, str) for k in o):
                return {"__dict__": [[k, walk(v)] for k, v in o.items()]}
            return {"__dict__": [[_key(k), walk(v)] for k, v in o.items()]}
        if isinstance(o, tuple):
            return {"__tuple__": [walk(v) for v in o]}
        if isinstance(o, list):
            return [walk(v) for v in o]
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        if hasattr(o, "item") and hasattr(o, "dtype"):  # numpy scalar
            return o.item()
        raise CheckpointError(f"cannot store a value of type {type(o).__name__} in a checkpoint")

    return tensors, walk(obj)


def _key(k: Any) -> Any:
    if isinstance(k, (int, str)):
        return {"__int__": k} if isinstance(k, int) else k
    raise CheckpointError(f"checkpoint dict keys must be str or int, got {type(k).__name__}")


def _unkey(k: Any) -> Any:
    if isinstance(k, str):
        return k
    if isinstance(k, dict):
        value = k.get("__int__")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    raise CheckpointError(f"malformed checkpoint skeleton (dict key {k!r})")


def unflatten_state(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    """Inverse of :func:`flatten_state`."""

    def walk(o: Any) -> Any:
        if isinstance(o, dict):
            if "__tensor__" in o:
                key = o["__tensor__"]
                if not isinstance(key, str):
                    raise CheckpointError(f"malformed checkpoint skeleton (tensor key {key!r})")
                return tensors[key]
            if "__tuple__" in o:
                return tuple(walk(v) for v in o["__tuple__"])
            if "__dict__" in o:
                return {_unkey(k): walk(v) for k, v in o["__dict__"]}
            raise CheckpointError("malformed checkpoint skeleton")
        if isinstance(o, list):
            return [walk(v) for v in o]
        return o

    return walk(skeleton)


def save_state(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Atomically write ``state`` (nested dicts/lists of tensors and plain values)."""
    from safetensors.torch import save

    tensors, skeleton = flatten_state(state)
    meta = {_META_KEY: json.dumps({"format": _FORMAT, "skeleton": skeleton})}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def _refuse_pickle(path: Path, head: bytes) -> None:
    if head[:1] == b"\x80" or head[:2] == b"PK":
        raise CheckpointError(
            f"{path} looks like a pickle / torch.save file; securetrain never unpickles files "
            "(that can run arbitrary code). Convert it to safetensors with "
            "safetensors.torch.save_file(state_dict, path) in a trusted environment"
        )


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file into ``(tensors, metadata)`` with typed errors."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"{p} is a directory, not a safetensors file; delete it or restore the file")
    if not p.is_file():
        raise CheckpointError(f"{p} does not exist")
    raw = p.read_bytes()
    try:
        tensors = load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_len])
    except (SafetensorError, ValueError, json.JSONDecodeError, OverflowError, RecursionError) as exc:
        # Only a file that is not valid safetensors can be a pickle or zip: a valid header
        # length may itself start with the byte 0x80 (one file in 256).
        _refuse_pickle(p, raw[:4])
        raise CheckpointError(f"{p} is corrupted or truncated ({exc}); delete it or restore a good copy") from exc
    return tensors, dict(header.get("__metadata__") or {})


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a file written by :func:`save_state`."""
    tensors, meta = read_safetensors(path)
    if _META_KEY not in meta:
        raise CheckpointError(f"{path} is a safetensors file but not a securetrain checkpoint")
    try:
        info = json.loads(meta[_META_KEY])
    except (json.JSONDecodeError, RecursionError, TypeError) as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is corrupted ({type(exc).__name__}: {exc})") from None
    if not isinstance(info, dict):
        raise CheckpointError(
            f"{path}: checkpoint metadata is corrupted (expected an object, got {type(info).__name__})"
        )
    if info.get("format") != _FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {info.get('format')!r}")
    if "skeleton" not in info:
        raise CheckpointError(f"{path}: checkpoint metadata is corrupted (no 'skeleton')")
    try:
        state = unflatten_state(tensors, info["skeleton"])
    except KeyError as exc:
        raise CheckpointError(f"{path}: checkpoint refers to a missing tensor {exc}") from None
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise CheckpointError(
            f"{path}: checkpoint metadata is corrupted ({type(exc).__name__}: {exc}); delete it or restore a good copy"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: checkpoint metadata is corrupted (the state is a {type(state).__name__})")
    return cast(dict[str, Any], state)


def save_weights(path: str | os.PathLike[str], module: torch.nn.Module) -> None:
    """Atomically write ``module.state_dict()`` as a plain safetensors file."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata={"format": "securetrain.weights/1"}))


def load_weights(path: str | os.PathLike[str], module: torch.nn.Module) -> torch.nn.Module:
    """Load a safetensors weights file into ``module`` (strict key match)."""
    tensors, _ = read_safetensors(path)
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match the model's parameters: {exc}") from exc
    return module
