"""Overlap producing batches with consuming them, on a thread.

With ``--workers 0`` a DataLoader renders views in the main thread, between
teacher or student steps. torch's kernels release the GIL, so rendering the
next batch on a thread overlaps with the current step without the start-up
and memory of worker processes. Order is preserved; errors are re-raised in
the consumer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` in order while a thread produces up to ``depth`` ahead."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        """Hand ``item`` over unless the consumer stopped; every put watches ``stop`` (the end marker
        too: a consumer stopped by Ctrl-C never takes it, and the join below would wait in vain)."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            put(exc)

    thread = threading.Thread(target=produce, name="kdcache-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        # The consumer stopped early (error, Ctrl-C) or finished: let the producer end, and wait for it,
        # so that a Ctrl-C never exits the interpreter while the thread is inside a torch kernel (which
        # aborts the process instead of exiting 130). It stops after the item it is producing.
        stop.set()
        thread.join(timeout=60)
