"""The store package: records as dataclasses, identity from fields, read-only stores, interrupted creation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from kdcache.errors import StoreError, StoreIncompleteError
from kdcache.store import DatasetRecord, Manifest, Store, TeacherCard, ViewsRecord, differences, probe
from kdcache.views import load_recipe
from tests.cli_helpers import assert_one_line_error, precompute_args, run_cli

DATA = "synthetic:samples=300,classes=5,size=12,channels=1,seed=3"  # as tests/test_precompute.py
PRECOMPUTE = {"data": DATA}


def _card(**changes: object) -> TeacherCard:
    base = TeacherCard(spec="kdcache:cnn_small", num_classes=10, in_channels=1, render={"size": None},
                       encoding="float16", codec="none", micro_batch=64, input_size=[28, 28],
                       weights="/abs/teacher.pt", weights_sha256="aa", program_sha256=None)
    return base.replace(**changes)


def test_card_round_trip_keeps_unknown_keys_and_validates() -> None:
    d = {**_card().to_dict(), "trained": {"loss": "regt"}, "future_key": [1, 2]}
    card = TeacherCard.from_dict(d)
    assert card.trained == {"loss": "regt"} and card.to_dict()["future_key"] == [1, 2]
    assert TeacherCard.from_dict(card.to_dict()) == card
    with pytest.raises(StoreError, match="micro_batch"):
        TeacherCard.from_dict({**d, "micro_batch": "64"})
    with pytest.raises(StoreError, match="lacks 'spec'"):
        TeacherCard.from_dict({k: v for k, v in d.items() if k != "spec"})


def test_identity_comes_from_the_fields() -> None:
    # Every identity field, including the program's and weights' hashes, takes part in the comparison.
    names = {f.name for f in dataclasses.fields(TeacherCard) if f.metadata.get("identity")}
    assert {"program_sha256", "weights_sha256", "random_init", "spec", "encoding"} <= names
    assert differences(_card(), _card(status="complete", weights="/moved/teacher.pt"), "teacher") == []
    diff = differences(_card(program_sha256="new"), _card(program_sha256="old"), "teacher")
    assert len(diff) == 1 and "program_sha256" in diff[0] and "'old'" in diff[0] and "'new'" in diff[0]
    assert differences(_card(random_init=True), _card(), "teacher")[0].startswith("teacher random_init")


def test_legacy_card_stats_are_read() -> None:
    card = TeacherCard.from_dict({**_card().to_dict(), "stats": {
        "isats_tau": {"grid": [1.0]}, "accuracy": [0.5], "computed": "2026-01-01"}})
    assert card.stats["isats_tau"] == {"grid": [1.0], "computed": "2026-01-01"}
    assert card.stats["accuracy"] == {"computed": "2026-01-01"}


def _tiny_store(path: Path) -> Store:
    recipe = load_recipe("none")
    store = Store.create(
        path, dataset=DatasetRecord(spec="x", name="x", num_samples=8, num_classes=3, fingerprint="sha256:x"),
        labels=np.arange(8) % 3,
        views=ViewsRecord(seed=0, num_views=1, recipe=recipe.to_dict(), recipe_hash=recipe.hash(),
                          param_names=recipe.param_names(), chunk_rows=4),
    )
    store.add_teacher("t", _card(num_classes=3))
    for j in range(2):
        store.write_chunk("t", 0, j, np.ones((4, 3), np.float16), np.zeros((4, 0), np.int32))
    store.set_card("t", store.card("t").replace(status="complete"))
    return store


def test_read_only_store_cannot_write(tmp_path: Path) -> None:
    _tiny_store(tmp_path / "s.zarr")
    store = Store.open(tmp_path / "s.zarr")
    before = (tmp_path / "s.zarr" / "zarr.json").read_bytes()
    with pytest.raises(StoreError, match="read-only"):
        store.set_card("t", store.card("t").replace(status="writing"))
    with pytest.raises(StoreError, match="read-only"):
        store.write_chunk("t", 0, 0, np.zeros((4, 3), np.float16), None)
    with pytest.raises(StoreError, match="read-only"):
        store.add_teacher("u", _card(num_classes=3))
    with pytest.raises(Exception):  # zarr itself opened the arrays read-only
        store.logits("t")[0, 0] = 0
    assert (tmp_path / "s.zarr" / "zarr.json").read_bytes() == before
    assert np.all(Store.open(tmp_path / "s.zarr").logits("t")[:] == 1)


def test_manifest_is_a_dataclass_and_round_trips(tmp_path: Path) -> None:
    store = _tiny_store(tmp_path / "s.zarr")
    raw = zarr.open_group(tmp_path / "s.zarr", mode="r").attrs["kdcache"]
    m = Manifest.from_dict(raw)
    assert m == store.manifest and m.to_dict() == raw
    assert m.teachers["t"].status == "complete" and m.status == "complete"


def test_edited_recipe_is_refused_on_open(tmp_path: Path) -> None:
    _tiny_store(tmp_path / "s.zarr")
    g = zarr.open_group(tmp_path / "s.zarr", mode="r+")
    m = dict(g.attrs["kdcache"])
    m["views"] = {**m["views"], "recipe": {**m["views"]["recipe"], "name": "edited"}}
    g.attrs["kdcache"] = m
    with pytest.raises(StoreError, match="recipe hashes to"):
        Store.open(tmp_path / "s.zarr")


def test_creation_killed_before_the_manifest_is_resumable(tmp_path: Path) -> None:
    """Arrays first, manifest last: a directory holding only the arrays is an interrupted creation."""
    out = tmp_path / "c.zarr"
    assert run_cli(*precompute_args(out, **PRECOMPUTE))[0] == 0
    ref = Store.open(out).logits("tiny")[:]
    # What a kill between the arrays and the manifest leaves: the group without its manifest attribute.
    meta = json.loads((out / "zarr.json").read_text())
    meta["attributes"] = {}
    (out / "zarr.json").write_text(json.dumps(meta))
    import shutil

    shutil.rmtree(out / "teachers")
    assert probe(out) == "creating"
    assert_one_line_error(*run_cli("info", str(out)), "creation was interrupted")
    with pytest.raises(StoreIncompleteError):
        Store.open(out)
    code, text = run_cli(*precompute_args(out, **PRECOMPUTE))
    assert code == 0, text
    assert np.array_equal(Store.open(out).logits("tiny")[:], ref)


def test_creation_killed_before_arrays_is_never_a_key_error(tmp_path: Path) -> None:
    out = tmp_path / "d.zarr"
    zarr.open_group(out, mode="w")  # only the group's zarr.json
    assert probe(out) == "creating"
    code, text = run_cli(*precompute_args(out, **PRECOMPUTE))
    assert code == 0, text
    assert Store.open(out).status == "complete"
    assert DATA in Store.open(out).dataset.spec


def test_a_chunk_changed_after_it_was_verified_is_verified_again(tmp_path: Path) -> None:
    from kdcache.errors import StoreCorruptError

    _tiny_store(tmp_path / "s.zarr")
    store = Store.open(tmp_path / "s.zarr")
    assert np.all(store.read_logits_chunk("t", 0, 1) == 1)
    assert np.all(store.read_logits_chunk("t", 0, 1) == 1)  # remembered: not hashed again
    chunk = tmp_path / "s.zarr" / "teachers" / "t" / "logits" / "c" / "0" / "1" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[0] ^= 1
    replacement = chunk.with_name("new")
    replacement.write_bytes(bytes(raw))
    replacement.replace(chunk)  # a new file, as any rewrite makes
    with pytest.raises(StoreCorruptError, match=r"view 0 chunk 1 \(rows 4-7\)"):
        store.read_logits_chunk("t", 0, 1)
