"""Making a stream's pieces ahead of the consumer, in a background thread, within a byte budget.

A streamed request alternates two kinds of work on the client: encrypting the next ciphertext
and sending it. While the server computes, it stops reading, the send blocks, and a client that
encrypts only when it sends sits idle. :class:`Prefetch` runs the producing iterator in its own
thread and keeps up to ``max_bytes`` of finished pieces ready, so encryption goes on while the
socket is blocked (SEAL's encryption and the blocked send overlap; the bound keeps memory flat).
An exception in the producer is raised to the consumer at the next piece; :meth:`Prefetch.close`
(or leaving the ``with`` block) stops the producer early.

Example:
    >>> with Prefetch(iter([b"ab", b"cde", b"f"]), max_bytes=4) as pieces:
    ...     list(pieces)
    [b'ab', b'cde', b'f']
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from types import TracebackType


class Prefetch(Iterator[bytes]):
    """Iterate ``source`` in a background thread, holding at most ``max_bytes`` of pieces ahead
    (always at least one piece, however large)."""

    def __init__(self, source: Iterator[bytes], *, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self._source = source
        self._max_bytes = int(max_bytes)
        self._items: deque[bytes] = deque()
        self._held = 0
        self._done = False
        self._stop = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="securetrain-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._source:
                with self._cond:
                    while self._items and self._held + len(item) > self._max_bytes and not self._stop:
                        self._cond.wait()
                    if self._stop:
                        return
                    self._items.append(item)
                    self._held += len(item)
                    self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 (handed to the consumer, raised there)
            with self._cond:
                self._error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def __iter__(self) -> Prefetch:
        return self

    def __next__(self) -> bytes:
        with self._cond:
            while not self._items and not self._done:
                self._cond.wait()
            if self._items:
                item = self._items.popleft()
                self._held -= len(item)
                self._cond.notify_all()
                return item
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            raise StopIteration

    def close(self) -> None:
        """Stop the producer (after the piece it is making) and wait for its thread."""
        with self._cond:
            self._stop = True
            self._items.clear()
            self._held = 0
            self._cond.notify_all()
        self._thread.join()

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["Prefetch"]
