"""The writer lease of a store on an object store (S3 on a local moto server), through the CLI where a user hits it.

A live lease refuses a second writer with one line naming its holder and its
expiry; an expired lease is taken over; a writer whose lease was taken stops
before its next write; of two writers taking over the same expired lease,
only one wins (the conditional writes moto and S3 provide).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import obstore
import pytest
from obstore.exceptions import AlreadyExistsError, PreconditionError

from kdcache.errors import StoreBusyError
from kdcache.store import Location, Store, locate
from kdcache.store.layout import LEASE_NAME
from kdcache.store.lease import Lease, LeaseLostError
from tests.cli_helpers import assert_one_line_error, precompute_args, run_cli
from tests.s3_server import S3Server

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=128,classes=5,size=12,channels=1,seed=3"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
PRECOMPUTE = {"data": DATA, "recipe": RECIPE}


@pytest.fixture(scope="module")
def server(s3: S3Server) -> S3Server:
    """The session's S3 server (tests/conftest.py) with this module's bucket."""
    s3.make_bucket("kdcache-lease")
    return s3


def _lease(url: str) -> dict:
    found = locate(url).read(LEASE_NAME)
    assert found is not None
    return json.loads(found[0])


def test_moto_honours_conditional_writes(server: S3Server) -> None:
    """The two primitives the lease is built on: create-if-absent and replace-if-etag."""
    objects = locate("s3://kdcache-lease/cond").objects()
    first = obstore.put(objects, "k", b"1", mode="create")
    with pytest.raises(AlreadyExistsError):
        obstore.put(objects, "k", b"2", mode="create")
    second = obstore.put(objects, "k", b"3", mode={"e_tag": first["e_tag"]})
    with pytest.raises(PreconditionError):
        obstore.put(objects, "k", b"4", mode={"e_tag": first["e_tag"]})  # stale etag
    assert bytes(obstore.get(objects, "k").bytes()) == b"3" and second["e_tag"] != first["e_tag"]


def test_a_second_writer_is_refused_naming_the_lease(server: S3Server) -> None:
    url = "s3://kdcache-lease/busy.zarr"
    assert run_cli(*precompute_args(url, **PRECOMPUTE))[0] == 0
    holder = Lease(locate(url), ttl=30)
    holder.acquire()
    try:
        code, text = run_cli(*precompute_args(url, "--teacher-name", "other", **PRECOMPUTE))
        assert_one_line_error(code, text, "being written by another process", holder.owner[:12], "expires")
        code, text = run_cli("stats", url)
        assert_one_line_error(code, text, "being written by another process", holder.owner[:12])
    finally:
        holder.release()
    assert Store.open(url).teacher_names() == ["tiny"]  # the refused writer wrote nothing
    assert _lease(url)["released"] is True
    code, text = run_cli(*precompute_args(url, "--teacher-name", "other",
                                          **PRECOMPUTE))  # released: the next writer goes on
    assert code == 0, text
    assert Store.open(url).teacher_names() == ["tiny", "other"]


def test_an_expired_lease_is_taken_over(server: S3Server) -> None:
    url = "s3://kdcache-lease/expired.zarr"
    dead = {"owner": "deadbeef0000", "host": "gone", "pid": 1, "started": "2026-01-01T00:00:00+00:00",
            "expires": time.time() - 1, "expires_utc": "2026-01-01T00:01:00+00:00", "released": False}
    obstore.put(locate(url).objects(), LEASE_NAME, json.dumps(dead).encode())
    code, text = run_cli(*precompute_args(url, **PRECOMPUTE))
    assert code == 0, text
    lease = _lease(url)
    assert lease["owner"] != "deadbeef0000" and lease["released"] is True
    # The same record, live, is refused (the edge: one second before it expires).
    obstore.put(locate(url).objects(), LEASE_NAME, json.dumps({**dead, "expires": time.time() + 5}).encode())
    code, text = run_cli(*precompute_args(url, **PRECOMPUTE))
    assert_one_line_error(code, text, "deadbeef0000", "gone", "pid 1", "2026-01-01T00:01:00")


def test_two_writers_taking_over_the_same_expired_lease_one_wins(server: S3Server,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    location = locate("s3://kdcache-lease/race.zarr")
    dead = {"owner": "old", "expires": time.time() - 1, "released": False}
    obstore.put(location.objects(), LEASE_NAME, json.dumps(dead).encode())
    a, b = Lease(location, ttl=30), Lease(locate(location.url), ttl=30)
    stale = location.read(LEASE_NAME)  # both read the expired lease ...
    a.acquire()  # ... a takes it over first
    try:
        real_read = Location.read

        def read_for_b(self: Location, key: str) -> tuple[bytes, str | None] | None:
            return stale if self is b.location and key == LEASE_NAME else real_read(self, key)

        monkeypatch.setattr(Location, "read", read_for_b)
        with pytest.raises(StoreBusyError):  # b's If-Match on the (stale) etag it read is refused
            b.acquire()
        monkeypatch.undo()
        assert _lease(location.url)["owner"] == a.owner
    finally:
        a.release()


def test_a_writer_whose_lease_was_taken_stops_writing(server: S3Server) -> None:
    url = "s3://kdcache-lease/lost.zarr"
    assert run_cli(*precompute_args(url, **PRECOMPUTE))[0] == 0
    lease = Lease(locate(url), ttl=30)
    lease.acquire()
    try:
        store = Store.open(url, mode="r+")
        card = store.card("tiny")
        store.set_card("tiny", card)  # holding the lease: writes go through
        stolen = {"owner": "thief", "host": "elsewhere", "pid": 2, "expires": time.time() + 60, "released": False}
        obstore.put(locate(url).objects(), LEASE_NAME, json.dumps(stolen).encode())
        assert lease.renew() is False  # If-Match on our etag is refused
        with pytest.raises(LeaseLostError, match="thief"):
            store.set_card("tiny", card)
        with pytest.raises(LeaseLostError):
            store.write_chunk("tiny", 0, 0, store.read_logits_chunk("tiny", 0, 0), None)
    finally:
        lease.release()
    assert _lease(url)["owner"] == "thief"  # releasing never overwrites another writer's lease


def test_a_lease_not_renewed_in_time_stops_writing(server: S3Server) -> None:
    url = "s3://kdcache-lease/starved.zarr"
    assert run_cli(*precompute_args(url, **PRECOMPUTE))[0] == 0
    lease = Lease(locate(url), ttl=1.0)
    lease.acquire()
    try:
        store = Store.open(url, mode="r+")
        lease._stop.set()  # a renewal thread starved of CPU: no renewal happens
        lease._thread.join()  # type: ignore[union-attr]
        store.set_card("tiny", store.card("tiny"))  # still well within the lease
        time.sleep(0.8)  # past expiry minus the safety margin (0.75 s), before the expiry itself
        with pytest.raises(LeaseLostError, match="not renewed in time"):
            store.set_card("tiny", store.card("tiny"))
    finally:
        lease.release()


@pytest.mark.slow
def test_a_precompute_whose_lease_is_taken_stops_with_one_line(server: S3Server) -> None:
    """Through the CLI: a real precompute subprocess renewing every second; the lease is taken from it
    mid-run; its next renewal is refused and it stops writing with one line, keeping what it recorded."""
    import subprocess
    import sys

    from tests.s3_server import s3_env

    url = "s3://kdcache-lease/taken.zarr"
    data = "synthetic:samples=2048,classes=5,size=12,channels=1,seed=3"
    args = ["precompute", "--data", data, "--teacher", "import:tests.helpers:slow", "--views", "2", "--seed", "7",
            "--recipe", RECIPE, "--out", url, "--chunk-rows", "64", "--batch-size", "64",
            "--storage-option", "lease_seconds=3"]
    env = {**s3_env(server), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "kdcache_cli.main", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    prefix = "teachers/slow/checksums/c/"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if sum(len(b) for b in obstore.list(locate(url).objects(), prefix)) >= 2:
            break
        time.sleep(0.05)
    thief = {"owner": "thief0000000", "host": "elsewhere", "pid": 2, "expires": time.time() + 600,
             "expires_utc": "later", "released": False}
    obstore.put(locate(url).objects(), LEASE_NAME, json.dumps(thief).encode())
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "thief0000000" in errors[0] and "stopped writing" in errors[0], err
    assert "Traceback" not in err
    store = Store.open(url)
    recorded = int((store.logit_checksums("slow")[:] != 0).sum())
    assert store.status == "writing" and 0 < recorded < 64
    time.sleep(1.5)  # nothing more is recorded after it stopped
    assert int((Store.open(url).logit_checksums("slow")[:] != 0).sum()) == recorded
    assert _lease(url)["owner"] == "thief0000000"  # the stopped writer never overwrote the new holder
