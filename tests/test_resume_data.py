"""A resume checks the data's content, not only its spec: a changed dataset under the same spec is refused.

The runs read an image folder; between the kill (or the end) and the resume
one image is rewritten, so ``--data`` names the same folder but other pixels.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.cli_helpers import assert_one_line_error, run_cli
from tests.resume_helpers import ROOT, run_until_killed

RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
TINY = "import:tests.helpers:tiny"

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def _folder(root: Path, shade: int = 0) -> str:
    from torchvision.io import write_png

    for k in range(24):
        folder = root / f"c{k % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        g = torch.Generator().manual_seed(k)
        image = torch.randint(0, 256, (3, 16, 16), generator=g, dtype=torch.uint8)
        if k == 0:
            image[:, 0, 0] = shade
        write_png(image, str(folder / f"{k}.png"))
    return f"imagefolder:{root}"


def test_train_teacher_refuses_to_continue_on_changed_data(tmp_path: Path) -> None:
    data = _folder(tmp_path / "images")
    out = tmp_path / "t" / "t.pt"
    args = ["train-teacher", "--data", data, "--val-data", data, "--model", TINY, "--recipe", RECIPE,
            "--epochs", 3, "--batch-size", 4, "--out", out, "--seed", 1]
    state = out.with_name("t.pt.state.pt")
    assert run_until_killed(args, state.exists)  # killed once epoch 1's state is written, 2 epochs before the end
    before = state.read_bytes()
    _folder(tmp_path / "images", shade=255)  # the same spec, one pixel changed
    assert_one_line_error(*run_cli(*args), "data_fingerprint")
    assert state.read_bytes() == before and not out.exists()


def test_distill_resume_refuses_changed_data(tmp_path: Path) -> None:
    data = _folder(tmp_path / "images")
    val = _folder(tmp_path / "val")
    out = tmp_path / "run"
    args = ["distill", "--teacher", TINY, "--views", 1, "--recipe", RECIPE, "--data", data,
            "--val-data", val, "--student", TINY, "--epochs", 1, "--batch-size", 4, "--out", out]
    code, text = run_cli(*args)
    assert code == 0, text
    assert "already done" in run_cli(*args, "--resume")[1]  # unchanged data: resumable
    _folder(tmp_path / "val", shade=255)
    assert_one_line_error(*run_cli(*args, "--resume"), "val_data_fingerprint")


@pytest.mark.parametrize("damaged", ["run.json", "steps.jsonl"])  # metrics.jsonl is rewritten from the state
def test_resume_with_a_corrupted_record_is_one_line_naming_it(tmp_path: Path, damaged: str) -> None:
    data = "synthetic:samples=64,classes=4,size=12,channels=1,seed=5"
    out = tmp_path / "run"
    args = ["distill", "--teacher", TINY, "--views", 1, "--recipe", RECIPE, "--data", data, "--val-data", data,
            "--student", TINY, "--epochs", 2, "--batch-size", 16, "--out", out]
    assert run_cli(*args)[0] == 0
    path = out / damaged
    lines = path.read_text().splitlines(keepends=True)
    lines[0] = "{not json\n"  # a middle line (or the whole record), not a torn tail
    path.write_text("".join(lines))
    assert_one_line_error(*run_cli(*args, "--resume"), damaged)
