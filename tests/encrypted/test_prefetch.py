"""Prefetch: pieces made ahead in a background thread, in order, within a byte budget."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import pytest

from securetrain.encrypted.prefetch import Prefetch


def test_pieces_come_in_order_and_the_producer_stays_within_its_budget() -> None:
    made = []
    lock = threading.Lock()

    def source() -> Iterator[bytes]:
        for i in range(50):
            with lock:
                made.append(i)
            yield bytes([i]) * 10

    with Prefetch(source(), max_bytes=35) as pieces:
        first = next(pieces)
        time.sleep(0.2)  # the producer runs ahead as far as the budget lets it
        with lock:
            ahead = len(made) - 1
        assert 1 <= ahead <= 4  # three pieces of 10 bytes held, a fourth being made
        rest = list(pieces)
    assert [first, *rest] == [bytes([i]) * 10 for i in range(50)]


def test_a_producer_error_reaches_the_consumer_after_the_pieces_before_it() -> None:
    def source() -> Iterator[bytes]:
        yield b"a"
        raise RuntimeError("encryption failed")

    with Prefetch(source(), max_bytes=100) as pieces:
        assert next(pieces) == b"a"
        with pytest.raises(RuntimeError, match="encryption failed"):
            next(pieces)


def test_closing_stops_an_endless_producer() -> None:
    counter = itertools.count()

    def source() -> Iterator[bytes]:
        for _ in counter:
            yield b"x" * 8

    pieces = Prefetch(source(), max_bytes=64)
    assert next(pieces) == b"x" * 8
    pieces.close()
    made = next(counter)
    time.sleep(0.05)
    assert next(counter) == made + 1  # nothing was drawn from the source after close
    with pytest.raises(ValueError):
        Prefetch(iter([]), max_bytes=0)
