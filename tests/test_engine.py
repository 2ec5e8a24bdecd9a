"""The training engine on a toy task: full-state resume, logs cut back to the state, derived resume arguments."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from kdcache.engine import (
    MAY_CHANGE,
    Engine,
    LoopSettings,
    OptimConfig,
    RunFiles,
    diff_args,
    identity_args,
    read_jsonl,
    seed_everything,
    write_json_atomic,
)
from kdcache.errors import RunError
from tests.resume_helpers import assert_same_tensors, without_timings


class _Points(Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 3, generator=g)
        self.y = (self.x.sum(1) > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"images": [self.x[i]], "label": self.y[i]}


class _Crash(Exception):
    pass


class _ToyTask:
    """Two networks with dropout (so the RNG state matters), one optimizer each."""

    evaluated = "net"

    def __init__(self, crash_at: tuple[int, int] | None = None) -> None:
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.3), nn.Linear(8, 2))
        self.aux = nn.Linear(3, 2)
        self.modules = {"net": self.net, "aux": self.aux}
        self.dataset = _Points()
        self.num_samples = 64
        self.crash_at = crash_at

    def param_groups(self) -> list[Iterable[nn.Parameter]]:
        return [self.net.parameters(), self.aux.parameters()]

    def epoch_batches(self, epoch: int, batch_size: int) -> tuple[list[list[int]], Iterator[int]]:
        order = torch.randperm(64, generator=torch.Generator().manual_seed(epoch)).tolist()
        return [order[b: b + batch_size] for b in range(0, 64, batch_size)], iter(range(100))

    def step(self, batch: dict[str, Any], side: Any, epoch: int) -> dict[str, torch.Tensor]:
        if self.crash_at == (epoch, side):
            raise _Crash
        x, y = batch["images"][0], batch["label"]
        ce = nn.functional.cross_entropy(self.net(x), y)
        aux = nn.functional.cross_entropy(self.aux(x), y)
        return {"loss": ce + aux, "ce": ce, "aux": aux}


def _engine(task: _ToyTask, tmp: Path, schedule: str) -> Engine:
    settings = LoopSettings(epochs=4, batch_size=16, workers=0, device=torch.device("cpu"),
                            optim=OptimConfig(lr=0.5, schedule=schedule))
    val = DataLoader(task.dataset, batch_sampler=[list(range(64))])
    files = RunFiles(state=tmp / "state.pt", metrics=tmp / "metrics.jsonl", steps=tmp / "steps.jsonl")
    return Engine(task, settings, files, command="toy", args={"a": 1}, val_loader=val)


def _run(tmp: Path, schedule: str, crash_at: tuple[int, int] | None = None, resume: bool = False) -> _ToyTask:
    tmp.mkdir(exist_ok=True)
    seed_everything(0)
    task = _ToyTask(crash_at)
    engine = _engine(task, tmp, schedule)
    engine.start(resume=resume)
    engine.run(progress=False)
    return task


@pytest.mark.parametrize("schedule", ["multistep", "cosine", "constant"])
def test_crash_mid_epoch_after_a_milestone_then_resume_is_bitwise(tmp_path: Path, schedule: str) -> None:
    ref = _run(tmp_path / "ref", schedule)
    run = tmp_path / "run"
    with pytest.raises(_Crash):
        _run(run, schedule, crash_at=(3, 2))  # mid-epoch 3; multistep milestones at 2, 3, 4
    torch.manual_seed(1234)  # whatever the process did meanwhile
    task = _run(run, schedule, resume=True)
    for name in ref.modules:
        assert_same_tensors(ref.modules[name].state_dict(), task.modules[name].state_dict())
    a, b = tmp_path / "ref", run
    assert without_timings(read_jsonl(a / "metrics.jsonl")) == without_timings(read_jsonl(b / "metrics.jsonl"))
    assert read_jsonl(a / "steps.jsonl") == read_jsonl(b / "steps.jsonl")


def test_logs_are_cut_back_to_the_saved_state(tmp_path: Path) -> None:
    with pytest.raises(_Crash):
        _run(tmp_path, "multistep", crash_at=(3, 0))
    # As if killed after epoch 3's logs were appended but before its state was written, mid-line.
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"epoch": 3, "train_loss": 9.0}) + "\n" + '{"epoch": 4, "tra')
    with (tmp_path / "steps.jsonl").open("a") as f:
        f.write(json.dumps({"epoch": 3, "step": 0, "loss": 9.0}) + "\n")
    seed_everything(0)
    engine = _engine(_ToyTask(), tmp_path, "multistep")
    assert engine.start(resume=True) == 3
    assert [r["epoch"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]
    assert {r["epoch"] for r in read_jsonl(tmp_path / "steps.jsonl")} == {1, 2}


def test_a_state_of_another_run_or_command_is_refused(tmp_path: Path) -> None:
    _run(tmp_path, "constant")
    seed_everything(0)
    task = _ToyTask()
    engine = _engine(task, tmp_path, "constant")
    engine.args = {"a": 2}
    with pytest.raises(RunError, match="a: 1 -> 2"):
        engine.start(resume=True)
    engine.args, engine.command = {"a": 1}, "other"
    with pytest.raises(RunError, match="`kdcache toy` run"):
        engine.start(resume=True)


def test_read_jsonl_drops_only_a_torn_last_line(tmp_path: Path) -> None:
    p = tmp_path / "log.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}\n{"a"')
    assert read_jsonl(p) == [{"a": 1}, {"a": 2}]
    p.write_text('{"a": 1}\n{"a"\n{"a": 2}\n')
    with pytest.raises(RunError, match="line 2 is corrupted"):
        read_jsonl(p)


def test_write_json_atomic_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    p = tmp_path / "run.json"
    write_json_atomic(p, {"a": 1})
    write_json_atomic(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [q.name for q in tmp_path.iterdir()] == ["run.json"]


@dataclass
class _Inner:
    lr: float = 0.1
    threads: int = field(default=1, metadata=MAY_CHANGE)


@dataclass
class _Cfg:
    data: str
    out: Path = field(metadata=MAY_CHANGE)
    inner: _Inner = field(default_factory=_Inner)
    opts: dict[str, Any] = field(default_factory=dict)


def test_resume_arguments_derive_from_the_dataclass_fields() -> None:
    a = identity_args(_Cfg("x", Path("/a"), _Inner(0.1, 1), {"t": 4}))
    assert a == {"data": "x", "inner": {"lr": 0.1}, "opts": {"t": 4}}
    assert identity_args(_Cfg("x", Path("/b"), _Inner(0.1, 8), {"t": 4})) == a  # MAY_CHANGE fields
    b = identity_args(_Cfg("x", Path("/a"), _Inner(0.2, 1), {}))
    assert diff_args(a, b) == ["inner.lr: 0.1 -> 0.2", "opts.t: 4 -> None"]
