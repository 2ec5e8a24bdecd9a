"""The Python API (`kdcache.open_store`): the example in docs/api.md runs as written, and is distill.

The example is read from docs/api.md (its one ```python block), so what is tested is what the page
shows. Run for a few steps on the embedded sample, then in full on a small store against `kdcache
distill` with the same options and seeds: the weights must be bitwise equal (the CLI builds its
steps from the same pieces).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import torch

import kdcache
from kdcache.api import EpochLoader
from kdcache.errors import ApproximateEncodingWarning, KdcacheError, UsageError
from kdcache.store import Store
from tests.cli_helpers import run_cli
from tests.resume_helpers import assert_same_tensors

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=256,classes=4,size=12,channels=1,seed=5"
VAL = "synthetic:samples=64,classes=4,size=12,channels=1,seed=5,split=test"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")


def doc_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.S)
    blocks = [b for b in blocks if "import lightning" not in b]  # the Lightning one: tests/test_api_ddp.py
    assert len(blocks) == 1, "docs/api.md should hold exactly one plain python block (the tested example)"
    return blocks[0]


def precompute(out: Path, data: str, *extra: str) -> None:
    code, text = run_cli("precompute", "--data", data, "--teacher", "import:tests.helpers:tiny", "--seed", "0",
                         "--out", out, *extra)
    assert code == 0, text


def test_the_doc_example_runs_a_few_steps_on_the_embedded_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    precompute(tmp_path / "store.zarr", "embedded", "--views", "1")
    original = EpochLoader.__iter__
    taken: list[int] = []

    def few(self: EpochLoader):  # a few steps per epoch: the example as written, shortened
        for b in itertools.islice(original(self), 3):
            taken.append(len(b.labels))
            yield b

    monkeypatch.setattr(EpochLoader, "__iter__", few)
    monkeypatch.chdir(tmp_path)
    exec(compile(doc_example(), "docs/api.md", "exec"), {"__name__": "__main__"})
    assert taken == [128] * 6
    out = capsys.readouterr().out
    assert re.search(r"epoch 2: last loss \d+\.\d{4}, val top-1 \d+\.\d\d%", out), out
    weights = torch.load(tmp_path / "student.pt", weights_only=True)
    assert weights and all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_the_doc_example_in_full_equals_kdcache_distill_bitwise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    precompute(tmp_path / "store.zarr", DATA, "--views", "3", "--recipe", RECIPE, "--encoding", "float32")
    monkeypatch.chdir(tmp_path)
    example = doc_example()
    assert '"embedded,split=test"' in example, "the example's validation data is no longer where this test sets it"
    code = example.replace('"embedded,split=test"', repr(VAL))
    exec(compile(code, "docs/api.md", "exec"), {"__name__": "__main__"})
    code_, text = run_cli("distill", tmp_path / "store.zarr", "--data", DATA, "--val-data", VAL, "--student",
                          "kdcache:tiny_cnn", "--loss", "nkd", "--loss-opt", "gamma=1.5", "--loss-opt",
                          "temperature=1", "--schedule", "constant", "--epochs", "2", "--batch-size", "128",
                          "--lr", "0.05", "--seed", "0", "--init-seed", "0", "--out", tmp_path / "run")
    assert code_ == 0, text
    assert_same_tensors(torch.load(tmp_path / "student.pt", weights_only=True),
                        torch.load(tmp_path / "run" / "final.pt", weights_only=True))


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("api") / "store.zarr"
    precompute(out, DATA, "--views", "3", "--recipe", RECIPE, "--encoding", "float32")
    code, text = run_cli("stats", out, "--tau0", "3")
    assert code == 0, text
    return out


def test_batches_carry_the_statistics_the_loss_declares(small_store: Path) -> None:
    store = kdcache.open_store(small_store, DATA)
    assert (store.num_samples, store.num_classes, store.num_views, store.in_channels) == (256, 4, 3, 1)
    plain = next(iter(store.batches(1, batch_size=32)))
    assert plain.loss_inputs == {}
    isats = next(iter(store.batches(1, batch_size=32, loss="isats")))
    assert set(isats.loss_inputs) == {"tau_star"} and isats.loss_inputs["tau_star"].shape == (32,)
    fgcr = next(iter(store.batches(1, batch_size=32, loss="fgcr")))
    assert fgcr.loss_inputs["class_table"].shape == (4, 4)
    assert torch.equal(plain.images, isats.images) and torch.equal(plain.teacher_logits, isats.teacher_logits)
    with pytest.raises(KdcacheError, match="kdcache stats"):
        store.batches(1, loss="fgcr", loss_opts={"tau0": 2})  # a class table the store lacks


def test_an_epoch_is_the_plan_distill_uses_and_replays(small_store: Path) -> None:
    from kdcache.distill.cached_rows import epoch_plan

    store = kdcache.open_store(small_store)  # data: the spec the store was made from
    loader = store.batches(2, batch_size=50, seed=7, num_workers=2)
    assert isinstance(loader, torch.utils.data.DataLoader) and len(loader) == 6
    first = list(loader)
    again = list(loader)
    plan = epoch_plan(7, 2, 256, 3, "cycle")
    assert torch.cat([b.samples for b in first]).tolist() == plan.order.tolist()
    assert torch.cat([b.views for b in first]).tolist() == [1] * 256  # cycle: epoch 2 shows view 1
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.teacher_logits, b.teacher_logits)
    before = torch.get_rng_state()
    list(store.batches(1, batch_size=64, num_workers=0))
    assert torch.equal(before, torch.get_rng_state())  # loading never draws from the global generator


def test_open_store_refuses_other_data(small_store: Path) -> None:
    with pytest.raises(KdcacheError, match="fingerprint|samples|classes"):
        kdcache.open_store(small_store, "synthetic:samples=256,classes=4,size=12,channels=1,seed=6")


def test_a_second_live_iteration_is_refused_and_a_closed_one_replays(small_store: Path) -> None:
    loader = kdcache.open_store(small_store).batches(1, batch_size=50)
    live = iter(loader)
    first = next(live)
    with pytest.raises(UsageError, match="already being iterated"):
        next(iter(loader))  # would take the rows the live iteration prefetched
    live.close()
    replay = next(iter(loader))
    assert torch.equal(first.images, replay.images) and torch.equal(first.teacher_logits, replay.teacher_logits)
    for _ in loader:
        break  # an abandoned loop closes its iteration
    assert len(list(loader)) == len(loader)


@pytest.fixture(scope="module")
def encoded_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store with the float32 teacher and its topk:2, sample:8@2 and int8 re-encodings."""
    out = tmp_path_factory.mktemp("api-enc") / "store.zarr"
    precompute(out, DATA, "--views", "2", "--recipe", RECIPE, "--encoding", "float32")
    for enc, name in (("topk:2", "top2"), ("sample:8@2", "s8"), ("int8", "q8")):
        code, text = run_cli("convert", out, "--teacher-name", "tiny", "--encoding", enc, "--as", name)
        assert code == 0, text
    return out


def rows_of(store_path: Path, teacher: str, batch: kdcache.api.DistillBatch, temperature: float) -> torch.Tensor:
    """The batch's rows read straight from the store, decoded at ``temperature``."""
    s = Store.open(store_path)
    chunk_rows = s.grid.chunk_rows
    out = []
    for sample, view in zip(batch.samples.tolist(), batch.views.tolist(), strict=True):
        chunk = s.read_logits_chunk(teacher, view, sample // chunk_rows, temperature=temperature)
        out.append(torch.from_numpy(chunk[sample % chunk_rows]).float())
    return torch.stack(out)


def test_a_topk_store_is_decoded_for_the_loss_and_refused_without_one(encoded_store: Path) -> None:
    store = kdcache.open_store(encoded_store, teacher_name="top2")
    with pytest.raises(UsageError, match=r"topk:2.*pass loss=.*allow_approximate_encoding=True"):
        store.batches(1, batch_size=32)
    kd4 = next(iter(store.batches(1, batch_size=32, loss="kd", loss_opts={"temperature": 4})))
    assert torch.equal(kd4.teacher_logits, rows_of(encoded_store, "top2", kd4, 4.0))  # distill's decode at T=4
    with pytest.warns(ApproximateEncodingWarning, match="decoded at T=1"):
        t1 = next(iter(store.batches(1, batch_size=32, allow_approximate_encoding=True)))
    assert torch.equal(t1.teacher_logits, rows_of(encoded_store, "top2", t1, 1.0))
    assert not torch.equal(t1.teacher_logits, kd4.teacher_logits)  # the reason a loss must be named


def test_a_sample_store_serves_kd_at_its_temperature_only(encoded_store: Path) -> None:
    store = kdcache.open_store(encoded_store, teacher_name="s8")
    with pytest.raises(UsageError, match="allow_approximate_encoding=True") as info:
        store.batches(1, loss="nkd")
    assert "--allow-approximate-encoding" not in str(info.value)  # the API's keyword, not the CLI's flag
    with pytest.raises(UsageError, match="pass loss="):
        store.batches(1)
    kd = next(iter(store.batches(1, batch_size=16, loss="kd", loss_opts={"temperature": 2})))
    assert torch.equal(kd.teacher_logits, rows_of(encoded_store, "s8", kd, 2.0))
    with pytest.warns(ApproximateEncodingWarning, match="biased"):
        approx = next(iter(store.batches(1, batch_size=16, loss="nkd", allow_approximate_encoding=True)))
    assert approx.teacher_logits.shape == (16, 4)


def test_an_int8_store_needs_no_loss(encoded_store: Path) -> None:
    b = next(iter(kdcache.open_store(encoded_store, teacher_name="q8").batches(1, batch_size=32)))
    assert torch.equal(b.teacher_logits, rows_of(encoded_store, "q8", b, 1.0))
