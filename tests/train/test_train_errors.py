"""Usage errors of ``python -m reparam_models.train``: one line on stderr, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from _tiny import run_module, tiny_args

from reparam_models.train import main


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("python -m reparam_models.train: error: "), err[0]
    return err[0]


def test_missing_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-dir"
    assert main(tiny_args(tmp_path / "out", "--data", str(missing))) == 2
    line = _one_line_error(capsys)
    assert "does not exist" in line and str(missing) in line
    assert not (tmp_path / "out").exists()


def test_data_dir_without_train_val(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data" / "cats").mkdir(parents=True)
    assert main(tiny_args(tmp_path / "out", "--data", str(tmp_path / "data"))) == 2
    assert "train/ and val/" in _one_line_error(capsys)


def test_unknown_model_did_you_mean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = tiny_args(tmp_path / "out")
    argv[argv.index("repmlpnet_n8")] = "repmlpnet_n33"
    assert main(argv) == 2
    line = _one_line_error(capsys)
    assert "unknown model 'repmlpnet_n33'" in line and "did you mean" in line
    assert "repmlpnet_n32" in line


@pytest.mark.parametrize("batch, world, message", [
    (1, 2, "smaller than the world size 2"),
    (3, 4, "smaller than the world size 4"),
    (5, 2, "not divisible by the world size 2"),
])
def test_batch_against_world_size(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch, batch: int, world: int,
                                  message: str) -> None:
    # torchrun's environment; the check runs before the process group is joined
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("RANK", "0")
    argv = tiny_args(tmp_path / "out")
    argv[argv.index("--batch-size") + 1] = str(batch)
    assert main(argv) == 2
    assert message in _one_line_error(capsys)


def test_resume_without_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(tiny_args(tmp_path / "out", "--resume", str(tmp_path))) == 2
    assert "no checkpoint to resume" in _one_line_error(capsys)


@pytest.mark.slow
def test_exit_code_of_the_real_command(tmp_path: Path) -> None:
    proc = run_module("--model", "repmlpnet_b22", "--output", str(tmp_path))
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "did you mean repmlpnet_b224" in errors[0], proc.stderr
    assert proc.stdout == ""
