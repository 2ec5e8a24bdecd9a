"""Session-wide, read-only fixtures shared by the test modules.

Each is built once per test session and must not be changed by a test (copy it first, e.g. with
``shutil.copytree``): one local S3-compatible server, and one cached store of the tiny teacher.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3_server import S3Server, s3_server
from tests.stores import make_store


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """One moto S3 server on 127.0.0.1 for the session (its environment set); each module makes its bucket."""
    with s3_server() as running:
        yield running


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete float32 store of :data:`tests.stores.DATA`: the tiny teacher, 3 views, seed 11 (read-only).

    A module that needs another store defines its own ``store`` fixture, which takes precedence.
    """
    return make_store(tmp_path_factory.mktemp("session") / "store.zarr")
