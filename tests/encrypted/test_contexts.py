"""ContextStore: tokens, quotas, idle expiry and no cross-client eviction (pure bookkeeping, no TenSEAL)."""

from __future__ import annotations

import pytest

from securetrain.encrypted.contexts import ContextStore
from securetrain.encrypted.errors import (
    AuthenticationError,
    QuotaExceededError,
    ServiceFullError,
    UnknownContextError,
)
from securetrain.errors import ConfigurationError


def test_tokens_quotas_and_no_eviction() -> None:
    store: ContextStore[str] = ContextStore(
        max_contexts=3, max_total_bytes=1000, max_contexts_per_client=2, max_bytes_per_client=500
    )
    a = store.add("a1", "A1", nbytes=100)
    store.add("a2", "A2", nbytes=100, token=a.token)
    with pytest.raises(QuotaExceededError, match="already holds 2 contexts, its quota is 2"):
        store.add("a3", "A3", nbytes=1, token=a.token)
    store.add("a2", "A2'", nbytes=350, token=a.token)  # replacing a context counts once
    with pytest.raises(QuotaExceededError, match="would take 550 bytes, its quota is 500"):
        store.add("a2", "A2''", nbytes=450, token=a.token)
    b = store.add("b1", "B1", nbytes=10)
    with pytest.raises(ServiceFullError, match="holds 3 contexts .* evicts nobody's"):
        store.add("c1", "C1", nbytes=10)
    assert store.get(a.token, "a1") == "A1" and store.get(b.token, "b1") == "B1"  # nothing was evicted
    with pytest.raises(UnknownContextError):
        store.get(b.token, "a1")  # another client's context
    with pytest.raises(UnknownContextError):
        store.remove(b.token, "a1")
    with pytest.raises(AuthenticationError, match="needs the token"):
        store.get(None, "a1")
    with pytest.raises(AuthenticationError, match="unknown token"):
        store.get("forged", "a1")
    store.remove(b.token, "b1")  # b's last context: b is forgotten, its token stops working
    with pytest.raises(AuthenticationError, match="unknown token"):
        store.check_token(b.token)
    assert store.usage() == {"clients": 1, "contexts": 2, "bytes": 450}


def test_idle_contexts_expire_and_used_ones_stay() -> None:
    now = [0.0]
    store: ContextStore[int] = ContextStore(ttl_s=10, clock=lambda: now[0])
    a = store.add("x", 1, nbytes=1)
    store.add("y", 2, nbytes=1, token=a.token)
    now[0] = 8
    assert store.get(a.token, "x") == 1  # used: its clock restarts
    now[0] = 15
    with pytest.raises(UnknownContextError, match="expired after 10 s unused"):
        store.get(a.token, "y")
    assert store.get(a.token, "x") == 1
    now[0] = 30
    with pytest.raises(AuthenticationError):
        store.get(a.token, "x")
    with pytest.raises(ConfigurationError, match="max_contexts_per_client must be a positive whole number"):
        ContextStore(max_contexts_per_client=0)
