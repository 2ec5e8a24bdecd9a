"""Storage backends (kdcache.store.backend): one interface for a local directory and an object store.

The same calls on a local directory, on ``memory://`` and on a local S3 server
(moto): whole objects by key, listing, removal, sizes, the writer lock kind
and the capabilities callers plan by. Every error path of a store's writes
ends in one line on an object store, as on a disk (a bucket removed under an
open store: ``add_teacher``, ``write_chunk``, a statistic's array, the
manifest). No module outside the backends tells a local store from a remote
one.
"""

from __future__ import annotations

import errno
import re
import shutil
import uuid
from pathlib import Path

import boto3
import numpy as np
import pytest

from kdcache.errors import StoreError
from kdcache.store import Store, WriterLock, locate
from kdcache.store.backend import Backend, LocalBackend, ObjectBackend
from kdcache.store.lease import Lease
from kdcache.store.stat_io import create_node
from tests.cli_helpers import precompute_args, run_cli
from tests.s3_server import CREDENTIALS, S3Server

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=64,classes=4,size=12,channels=1,seed=5"


def _client(server: S3Server):  # noqa: ANN202 - boto3's client type is generated
    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name=CREDENTIALS["AWS_REGION"])


def _drop_bucket(server: S3Server, bucket: str) -> None:
    client = _client(server)
    for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        client.delete_object(Bucket=bucket, Key=item["Key"])
    client.delete_bucket(Bucket=bucket)


@pytest.fixture()
def orphaned(s3: S3Server) -> Store:
    """A complete S3 store opened for writing, whose bucket is then removed (every write must fail).

    The handles of its arrays were looked up before, so a write reaches the bucket (and is not refused
    earlier, as a missing array)."""
    bucket = f"kdcache-gone-{uuid.uuid4().hex[:8]}"
    s3.make_bucket(bucket)
    url = f"s3://{bucket}/s.zarr"
    code, text = run_cli(*precompute_args(url, data=DATA, views=1, encoding="float32"))
    assert code == 0, text
    store = Store.open(url, mode="r+")
    handles = {node: store._array(node) for node in ("teachers/tiny/logits", "teachers/tiny/checksums")}
    store._array = handles.__getitem__  # type: ignore[method-assign]
    _drop_bucket(s3, bucket)
    return store


def _one_line_bucket_error(exc: pytest.ExceptionInfo[StoreError], store: Store) -> None:
    text = str(exc.value)
    assert "\n" not in text and str(store.path) in text, text
    assert "does not exist; create it or check the URL" in text, text


def test_add_teacher_on_a_remote_store_fails_in_one_line(orphaned: Store) -> None:
    # Before the backends, obstore's own multi-line error escaped add_teacher (only OSError was caught,
    # and it would have been named as a local directory).
    with pytest.raises(StoreError) as exc:
        orphaned.add_teacher("second", orphaned.card("tiny"))
    _one_line_bucket_error(exc, orphaned)


def test_every_remote_write_path_fails_in_one_line(orphaned: Store) -> None:
    rows = orphaned.grid.bounds(0)[1]
    logits = np.zeros((rows, orphaned.card("tiny").num_classes), dtype=np.float32)
    for write in (lambda: orphaned.write_chunk("tiny", 0, 0, logits, None),
                  lambda: create_node(orphaned, "tiny", "probe", shape=(4,), dtype="float32"),
                  lambda: orphaned.set_card("tiny", orphaned.card("tiny"))):
        with pytest.raises(StoreError) as exc:
            write()
        _one_line_bucket_error(exc, orphaned)


def test_add_teacher_on_a_full_local_disk_names_the_teacher_directory(store: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    local = Store.open(shutil.copytree(store, tmp_path / "s.zarr"), mode="r+")

    def full(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(local.group), "create_array", full)
    with pytest.raises(OSError) as exc:
        local.add_teacher("second", local.card("tiny"))
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(tmp_path / "s.zarr" / "teachers" / "second")


@pytest.fixture(params=["local", "memory", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        (tmp_path / "root").mkdir()
        return locate(tmp_path / "root").backend
    if request.param == "memory":
        return locate(f"memory://backend-{uuid.uuid4().hex[:8]}").backend
    server: S3Server = request.getfixturevalue("s3")
    bucket = f"kdcache-backend-{uuid.uuid4().hex[:8]}"
    server.make_bucket(bucket)
    return locate(f"s3://{bucket}/root").backend


def test_one_interface_for_every_backend(backend: Backend) -> None:
    assert backend.probe() in ("missing", "empty")
    assert backend.read("a/b.json") is None and not backend.exists("a/b.json")
    backend.replace_atomic("a/b.json", b"one")
    backend.replace_atomic("a/b.json", b"two")  # replaced whole
    backend.replace_atomic("a/c/d", b"xyz")
    backend.replace_atomic("top", b"1")
    assert backend.read("a/b.json") == b"two" and backend.exists("a/b.json")
    assert backend.list() == {"a", "top"} and backend.list("a") == {"b.json", "c"}
    assert backend.size("a/c") >= 3
    backend.sync("a")  # durable (fsync) or nothing to do (a PUT is durable)
    backend.remove("a")
    backend.remove("never/there")  # nothing there is no error
    assert backend.list() == {"top"} and backend.read("a/c/d") is None
    assert str(backend) == str(backend.location)


def test_capabilities_say_what_each_backend_promises(tmp_path: Path) -> None:
    local, memory = locate(tmp_path).backend, locate("memory://caps").backend
    assert isinstance(local, LocalBackend) and isinstance(memory, ObjectBackend)  # memory:// is an object store
    assert (local.lock_kind, local.needs_sync, local.file_signatures, local.high_latency) == \
        ("flock", True, True, False)
    assert (memory.lock_kind, memory.needs_sync, memory.file_signatures, memory.high_latency) == \
        ("lease", False, False, True)
    assert isinstance(local.writer_lock(), WriterLock) and isinstance(memory.writer_lock(), Lease)
    local.replace_atomic("f", b"x")
    assert local.signature("f") is not None and memory.signature("f") is None


def test_no_local_or_remote_branch_outside_the_backends() -> None:
    """Where a store lives is asked of its backend: no module tests ``Location.local``/``remote`` or the
    type of a store's path (the Location may still parse URLs, and hand out its backend)."""
    branch = re.compile(r"\.local is (not )?None|\.remote\b|isinstance\([^)]*\b(Location|Path)\)|\.local\b")
    allowed = {"kdcache/store/backend.py", "kdcache/store/location.py",
               "kdcache/engine/config.py"}  # config turns Path fields into JSON strings, not a store branch
    found = []
    for folder in ("kdcache", "cli"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in allowed:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if branch.search(line.split("#", 1)[0]):
                    found.append(f"{rel}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_a_commands_storage_options_end_with_it(store: Path) -> None:
    """``--storage-option`` configures the object stores of one command; a local store opened after it in the
    same process (the Python API, a test) is not refused for options it never gave (issue 22 item 5's
    refusal stays: ``tests/test_store_format.py``)."""
    code, text = run_cli("info", "memory://kdcache-nothing-here", "--storage-option", "region=us-east-1")
    assert code == 1 and "no store at memory://kdcache-nothing-here" in text, text
    assert Store.open(store).status == "complete"
