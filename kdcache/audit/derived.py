"""``verify`` of a derived teacher (``kdcache ensemble``): its record against its members, and its replay.

A derived teacher has no network to run again: its rows are a function of
its members' stored rows (:func:`kdcache.precompute.ensemble.derive_chunk`).
So ``verify`` checks that every member still has the checksum records the
card recorded (:func:`kdcache.store.derivation.changes`), and
``verify --replay N`` re-derives the chunks holding N random (sample, view)
pairs from the members' stored rows, encodes them as the writer did, and
compares: bit for bit on the platform the card records (the same numpy
float64 maths), elsewhere within the encoding's replay rule at a slack of
1e-4 times the row's largest |logit| (another CPU's SIMD exp and log round
differently). The members themselves are replayed as teachers.
"""

from __future__ import annotations

import numpy as np

from kdcache import encodings
from kdcache.audit.verify import RELATIVE_SLACK, ReplayResult, choose_pairs, compare_row
from kdcache.precompute.ensemble import derive_chunk, from_record
from kdcache.store import Store, platform_differences, platform_record
from kdcache.store.derivation import derivation
from kdcache.store.teacher_writer import encode


def replay_derived(store: Store, name: str, pairs: int, seed: int = 0) -> ReplayResult:
    """Re-derive ``pairs`` distinct random (sample, view) pairs of derived teacher ``name`` and compare them
    with the store (the pairs drawn as a teacher's replay draws them)."""
    record = derivation(store, name)
    if record is None:
        raise ValueError(f"teacher {name!r} is not a derived teacher")
    ensemble = from_record(record)
    card = store.card(name)
    enc = encodings.parse(card.encoding)
    diffs = [f"{d.replace(' vs ', ' in the store, ', 1)} here"
             for d in platform_differences(dict(card.platform or {}), platform_record("cpu"))]
    chosen = choose_pairs(np.random.default_rng(seed), store.num_samples, store.num_views, pairs)
    result = ReplayResult(pairs=len(chosen), asked=pairs, max_abs_diff=0.0, argmax_agreement=0.0,
                          same_platform=not diffs, platform_differences=diffs,
                          rule=f"{enc.replay_rule}; slack = {RELATIVE_SLACK:g} x max(1, the row's largest |logit|)")
    by_chunk: dict[tuple[int, int], list[int]] = {}
    grid = store.grid
    for sample, view in chosen:
        by_chunk.setdefault((view, sample // grid.chunk_rows), []).append(sample)
    labels, agree = store.labels(), 0
    for (view, chunk), samples in sorted(by_chunk.items()):
        start, stop = grid.bounds(chunk)
        derived = derive_chunk(store, ensemble, labels, view, chunk)  # the whole chunk, as the writer made it
        mine = encode(enc, derived, encodings.Rows(seed=store.views.seed, view=view, samples=np.arange(start, stop),
                                                   teacher=name))
        stored = store.read_encoded_chunk(name, view, chunk)
        for sample in sorted(samples):
            r = sample - start
            row_mine = {k: p[r : r + 1] for k, p in mine.items()}
            row_stored = {k: p[r : r + 1] for k, p in stored.items()}
            z = derived[r : r + 1].astype(np.float64)
            agree += compare_row(result, enc, card.num_classes, row_stored, row_mine, z,
                                 lambda z=z: RELATIVE_SLACK * np.maximum(1.0, np.abs(z).max(axis=1)), sample, view)
    result.argmax_agreement = agree / max(1, len(chosen))
    return result
