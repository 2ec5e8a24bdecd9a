"""Stores at URLs, driven through the CLI against a real S3 server (moto) on 127.0.0.1.

The same commands as on a local directory: precompute, info, verify (with the
replay audit), stats and distill on ``s3://``; the stored bits equal a local
store's; a corrupted object is caught like a corrupted file; a bad endpoint, a
missing bucket or a bad option is one line with its exit code; ``memory://``
and ``file://`` work. The writer lease has its own tests in
``tests/test_remote_lease.py``, the kill-and-resume in ``tests/test_remote_resume.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import obstore
import pytest

from kdcache.distill.cached_rows import CachedRows, epoch_plan
from kdcache.errors import StoreCorruptError, StoreError
from kdcache.store import LOCK_NAME, Store, locate
from kdcache.store.stat_io import node_names
from tests.cli_helpers import assert_one_line_error, precompute_args, run_cli
from tests.s3_server import S3Server, free_port, s3_server

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=300,classes=5,size=12,channels=1,seed=3"
VAL = "synthetic:samples=60,classes=5,size=12,channels=1,seed=4"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
PRECOMPUTE = {"data": DATA, "recipe": RECIPE, "encoding": "float32"}


@pytest.fixture(scope="module")
def server(s3: S3Server) -> S3Server:
    """The session's S3 server (tests/conftest.py) with this module's bucket."""
    s3.make_bucket("kdcache-test")
    return s3


@pytest.fixture(scope="module")
def s3_store(server: S3Server) -> str:
    url = "s3://kdcache-test/stores/a.zarr"
    code, text = run_cli(*precompute_args(url, **PRECOMPUTE))
    assert code == 0, text
    return url


@pytest.fixture(scope="module")
def local_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "a.zarr"
    code, text = run_cli(*precompute_args(str(out), **PRECOMPUTE))
    assert code == 0, text
    return out


def test_s3_store_holds_the_same_bits_as_a_local_one(s3_store: str, local_store: Path) -> None:
    remote, local = Store.open(s3_store), Store.open(local_store)
    assert remote.status == "complete" and str(remote.path) == s3_store
    assert np.array_equal(remote.logits("tiny")[:], local.logits("tiny")[:])
    assert np.array_equal(remote.params()[:], local.params()[:])
    assert np.array_equal(remote.logit_checksums("tiny")[:], local.logit_checksums("tiny")[:])
    assert remote.manifest.views == local.manifest.views and remote.manifest.dataset == local.manifest.dataset


def test_info_verify_replay_stats_distill_on_s3(s3_store: str, tmp_path: Path) -> None:
    code, text = run_cli("info", s3_store)
    assert code == 0 and s3_store in text and "complete" in text, text
    code, text = run_cli("verify", s3_store, "--replay", "3")
    assert code == 0 and "bitwise equal" in text and "OK" in text, text
    code, text = run_cli("stats", s3_store)
    assert code == 0, text
    assert set(Store.open(s3_store).card("tiny").stats) >= {"isats_tau", "class_table", "accuracy"}
    out = tmp_path / "run"
    code, text = run_cli("distill", s3_store, "--data", DATA, "--val-data", VAL, "--student",
                         "import:tests.helpers:tiny", "--loss", "isats", "--epochs", "1", "--batch-size", "64",
                         "--out", out, "--storage-option", "session_token=kdcache-secret-token")
    assert code == 0, text
    assert (out / "final.pt").is_file() and (out / "metrics.jsonl").read_text().count("\n") == 1
    records = "".join(p.read_text(errors="replace") for p in out.iterdir() if p.suffix in (".json", ".jsonl"))
    assert s3_store in records and "kdcache-secret-token" not in records  # the URL is recorded, the option not


def test_concurrent_remote_reads_give_the_local_batches(s3_store: str, local_store: Path) -> None:
    """The distill reader fetches a window's chunks concurrently from S3: same rows, same order, as locally."""
    plan = epoch_plan(seed=1, epoch=1, num_samples=300, num_views=2, policy="random", window=128)
    remote_rows = CachedRows(Store.open(s3_store), "tiny")
    assert remote_rows.concurrency > 1
    remote = list(remote_rows.iterate(plan, 50))
    local = list(CachedRows(Store.open(local_store), "tiny").iterate(plan, 50))
    assert len(remote) == len(local) == 6
    for a, b in zip(remote, local):
        assert a.keys() == b.keys()
        for key in a:
            assert bool((a[key] == b[key]).all()), key


def test_a_corrupted_object_is_named(server: S3Server, tmp_path: Path) -> None:
    url = "s3://kdcache-test/stores/corrupt.zarr"
    assert run_cli(*precompute_args(url, **PRECOMPUTE))[0] == 0
    objects = locate(url).objects()
    key = "teachers/tiny/logits/c/1/2/0"
    raw = bytearray(obstore.get(objects, key).bytes())
    raw[5] ^= 0xFF
    obstore.put(objects, key, bytes(raw))
    code, text = run_cli("verify", url)
    assert code == 1 and "view 1 chunk 2" in text and "checksum mismatch" in text, text
    code, text = run_cli("distill", url, "--data", DATA, "--val-data", VAL, "--student", "import:tests.helpers:tiny",
                         "--loss", "kd", "--epochs", "2", "--out", tmp_path / "run")
    assert_one_line_error(code, text, "view 1 chunk 2", "checksum")


def test_bad_endpoint_missing_bucket_and_bad_options_are_one_line(server: S3Server, s3_store: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    code, text = run_cli("info", s3_store, "--storage-option", f"endpoint={dead}")
    assert_one_line_error(code, text, "cannot reach", dead)
    code, text = run_cli(*precompute_args(s3_store.replace("s3://kdcache-test", "s3://no-such-bucket"), **PRECOMPUTE))
    assert_one_line_error(code, text, "no-such-bucket", "does not exist")
    code, text = run_cli("verify", "s3://no-such-bucket/x.zarr")
    assert_one_line_error(code, text, "does not exist")
    code, text = run_cli("info", "s3://kdcache-test/nothing-here.zarr")
    assert_one_line_error(code, text, "no store at s3://kdcache-test/nothing-here.zarr")
    code, text = run_cli("info", s3_store, "--storage-option", "no_such_key=1")
    assert_one_line_error(code, text, "no_such_key", exit_code=2)
    code, text = run_cli("info", s3_store, "--storage-option", "endpoint")
    assert_one_line_error(code, text, "key=value", exit_code=2)
    code, text = run_cli(*precompute_args("s3://kdcache-test/lease.zarr", "--storage-option", "lease_seconds=0",
                                          **PRECOMPUTE))
    assert_one_line_error(code, text, "lease_seconds=0", "positive", exit_code=2)
    code, text = run_cli(*precompute_args("s3://kdcache-test/lease.zarr", "--storage-option", "lease_seconds=inf",
                                          **PRECOMPUTE))
    assert_one_line_error(code, text, "lease_seconds=inf", "positive", exit_code=2)
    code, text = run_cli("info", "ftp://host/x.zarr")
    assert_one_line_error(code, text, "unsupported store URL scheme 'ftp'", exit_code=2)


def test_memory_url_and_statistic_generations(tmp_path: Path) -> None:
    url = "memory://kdcache-test/m.zarr"
    code, text = run_cli(*precompute_args(url, **PRECOMPUTE))
    assert code == 0, text
    code, text = run_cli("verify", url)
    assert code == 0 and "OK" in text, text
    for _ in range(3):  # each run writes a generation; the third removes the first (objects deleted)
        code, text = run_cli("stats", url)
        assert code == 0, text
    store = Store.open(url)
    listed = {entry["node"] for entry in store.card("tiny").stats.values()}
    nodes = set(node_names(store, "tiny"))
    assert listed <= nodes and len(nodes) == 2 * len(listed)
    assert not any(o["path"].startswith("teachers/tiny/stats/isats_tau/")
                   for batch in obstore.list(store.location.objects(), "teachers/tiny/stats/") for o in batch)


def test_an_object_store_hashes_every_read(tmp_path: Path) -> None:
    """A local reader trusts a chunk file it verified while inode/size/mtime hold; an object has no such
    signature, so a chunk replaced after a first verified read is caught on the next read."""
    url = "memory://kdcache-test/rehash.zarr"
    assert run_cli(*precompute_args(url, **PRECOMPUTE))[0] == 0
    store = Store.open(url)
    good = store.read_logits_chunk("tiny", 0, 1)
    objects = store.location.objects()
    key = "teachers/tiny/logits/c/0/1/0"
    raw = bytearray(obstore.get(objects, key).bytes())
    raw[0] ^= 0x01
    obstore.put(objects, key, bytes(raw))
    with pytest.raises(StoreCorruptError, match="view 0 chunk 1"):
        store.read_logits_chunk("tiny", 0, 1)
    assert good.shape == (64, 5)


def test_file_url_is_a_local_directory_with_flock(tmp_path: Path, local_store: Path) -> None:
    out = tmp_path / "f.zarr"
    code, text = run_cli(*precompute_args(f"file://{out}", **PRECOMPUTE))
    assert code == 0, text
    assert (out / LOCK_NAME).exists()  # the local writer lock, not a lease
    assert np.array_equal(Store.open(out).logits("tiny")[:], Store.open(local_store).logits("tiny")[:])
    code, text = run_cli("verify", f"file://{out}")
    assert code == 0, text


def test_an_endpoint_lost_mid_read_is_one_line(tmp_path: Path) -> None:
    """A store opened, then its server gone: the next chunk read is one StoreError line, not a traceback."""
    with s3_server() as other:
        other.make_bucket("kdcache-gone")
        url = "s3://kdcache-gone/g.zarr"
        assert run_cli(*precompute_args(url, **PRECOMPUTE))[0] == 0
        store = Store.open(url)
        store.read_logits_chunk("tiny", 0, 0)
    with pytest.raises(StoreError, match="cannot reach the object store"):
        store.read_logits_chunk("tiny", 0, 1)


def test_remote_chunk_reads_overlap_and_reach_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """The distill reader keeps several chunk reads of an object store in flight, for the current window and
    the next ones, so a slow GET is not what the student waits for; a local store reads one at a time."""
    import threading
    import time

    url = "memory://kdcache-test/overlap.zarr"
    assert run_cli(*precompute_args(url, **PRECOMPUTE))[0] == 0
    store = Store.open(url)
    state = {"now": 0, "most": 0}
    lock = threading.Lock()
    real = Store.read_params_chunk

    def slow_read(self: Store, view: int, chunk: int, verify: bool = True) -> np.ndarray:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.05)  # a GET's latency
        with lock:
            state["now"] -= 1
        return real(self, view, chunk, verify)

    monkeypatch.setattr(Store, "read_params_chunk", slow_read)
    plan = epoch_plan(seed=0, epoch=1, num_samples=300, num_views=2, policy="cycle", window=64)
    rows = list(CachedRows(store, "tiny").iterate(plan, 300))  # one batch: every window is waited on at once
    assert len(rows) == 1 and rows[0]["params"].shape == (300, 3)
    assert state["most"] >= 3  # the current window's chunk and the next two windows' were read together
    state["most"] = 0
    list(CachedRows(store, "tiny", concurrency=1).iterate(plan, 300))
    assert state["most"] == 1


def test_without_obstore_a_url_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "obstore.store", None)  # as if obstore were not installed
    code, text = run_cli("info", "s3://kdcache-test/x.zarr")
    assert_one_line_error(code, text, "pip install 'kdcache[remote]'", exit_code=2)
