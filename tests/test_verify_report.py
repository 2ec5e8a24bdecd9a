"""``kdcache verify`` as a user reads it: a replay capped at the store's pairs with a progress bar, a sample
teacher's argmax agreement explained, and Ctrl-C that does not claim to have saved anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdcache.audit import verify as verify_module
from kdcache.audit.verify import verify_store
from tests.cli_helpers import run_cli

DATA = "synthetic:samples=40,classes=4,size=8,channels=1,seed=3"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("v") / "s.zarr"
    for name, encoding in (("f", "float16"), ("s", "sample:4")):
        code, text = run_cli("precompute", "--data", DATA, "--teacher", "import:tests.helpers:tiny", "--views", "2",
                             "--seed", "1", "--recipe", "none", "--out", out, "--chunk-rows", "64",
                             "--teacher-name", name, "--encoding", encoding)
        assert code == 0, text
    return out


def test_a_replay_is_capped_at_the_stores_pairs_and_shows_progress(store: Path) -> None:
    code, text = run_cli("verify", store, "--replay", "100000", "--teacher-name", "f")
    assert code == 0, text
    assert "replay f: 80 (sample, view) pairs (every pair of the store; 100,000 asked)" in text, text
    assert "replay f" in text and "80/80" in text, text  # the progress bar's last state
    report = verify_store(store, replay=100000, teacher="f")
    assert report.replay["f"].pairs == 80 and report.replay["f"].bitwise


def test_replayed_pairs_are_distinct_and_start_with_the_same_draw() -> None:
    from kdcache.audit.verify import choose_pairs

    pairs = choose_pairs(np.random.default_rng(0), 10, 3, 25)
    assert len(set(pairs)) == 25
    rng = np.random.default_rng(0)
    assert pairs[0] == (int(rng.integers(10)), int(rng.integers(3)))  # the draw of earlier versions
    assert sorted(choose_pairs(np.random.default_rng(0), 10, 3, 31)) == [(i, v) for i in range(10) for v in range(3)]


def test_a_sample_teachers_argmax_agreement_is_explained(store: Path) -> None:
    code, text = run_cli("verify", store, "--replay", "40", "--teacher-name", "s")
    assert code == 0, text
    assert "sample:4@1 stores draws from the teacher's softmax" in text and "below 100% is expected" in text, text
    code, text = run_cli("verify", store, "--replay", "4", "--teacher-name", "f")
    assert "draws from the teacher's softmax" not in text


def test_ctrl_c_during_verify_does_not_claim_anything_was_saved(store: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(verify_module, "replay_audit", interrupted)
    code, text = run_cli("verify", store, "--replay", "4")
    assert code == 130, text
    assert "what was finished is saved" not in text and "verify writes nothing" in text, text
