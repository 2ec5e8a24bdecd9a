"""The thread prefetch keeps order, re-raises errors, and lets the producer go when the consumer stops."""

from __future__ import annotations

import threading
import time

import pytest

from kdcache.distill.prefetch import prefetch


def test_order_is_kept() -> None:
    assert list(prefetch(range(1000), depth=3)) == list(range(1000))


def test_producer_errors_reach_the_consumer() -> None:
    def items():
        yield 1
        raise ValueError("bad sample 7")

    it = prefetch(items())
    assert next(it) == 1
    with pytest.raises(ValueError, match="bad sample 7"):
        next(it)


def test_consumer_stopping_early_releases_the_thread() -> None:
    before = threading.active_count()
    it = prefetch(iter(range(10**9)), depth=2)
    assert next(it) == 0
    it.close()  # what a `break` or an exception in the loop does
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before


def test_consumer_stopping_after_the_producer_finished_returns_at_once() -> None:
    # The producer has produced every item and waits to hand over its end marker into a full
    # queue when the consumer stops (Ctrl-C on the first of a few batches): closing must not
    # wait for the thread's join timeout.
    it = prefetch(iter(range(2)), depth=1)
    assert next(it) == 0
    time.sleep(0.3)  # let the producer reach the end marker
    t0 = time.perf_counter()
    it.close()
    assert time.perf_counter() - t0 < 2.0
