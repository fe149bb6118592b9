"""The output folder of a run: its lock."""

import dataclasses

import pytest

from textual_inversion import UserError, train
from textual_inversion.rundir import LOCK_FILE, RunLock


def test_a_finished_run_leaves_no_lock_file(train_config):
    train(dataclasses.replace(train_config, steps=2))
    output_dir = train_config.resolved_output_dir()
    assert (output_dir / "run.json").is_file() and not (output_dir / LOCK_FILE).exists()


def test_a_released_lock_removes_its_file_and_still_excludes_a_second_holder(tmp_path):
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_FILE).is_file()
        with pytest.raises(UserError, match="another training run is writing there"):
            RunLock(tmp_path).__enter__()
    assert not (tmp_path / LOCK_FILE).exists()
    with RunLock(tmp_path):  # taken again after release, and exclusive again
        with pytest.raises(UserError):
            RunLock(tmp_path).__enter__()


def test_a_lock_on_a_file_removed_by_its_last_holder_is_not_kept(tmp_path, monkeypatch):
    """One who opened the lock file just before its holder removed it and let go must not hold the old file."""
    first = RunLock(tmp_path).__enter__()
    opened_early = [open(tmp_path / LOCK_FILE, "a+")]  # what a second run opened just before `first` let go
    first.__exit__(None, None, None)
    monkeypatch.setattr("textual_inversion.rundir.open", lambda path, mode: opened_early.pop() if opened_early
                        else open(path, mode), raising=False)
    with RunLock(tmp_path):
        assert not opened_early and (tmp_path / LOCK_FILE).is_file()  # started over on the file at the path
        with pytest.raises(UserError):  # which a third run sees
            RunLock(tmp_path).__enter__()


def test_loss_png_shows_the_fixed_batch_loss_below_the_training_loss(tmp_path):
    from PIL import Image

    from textual_inversion.rundir import write_loss_files

    history = [(step, 0.08 + 0.01 * (step % 3), 0.05) for step in range(1, 31)]
    write_loss_files(tmp_path, history)
    alone = Image.open(tmp_path / "loss.png").size
    assert not (tmp_path / "loss_fixed_batch.csv").exists()
    write_loss_files(tmp_path, history, [(0, 0.2), (10, 0.15), (20, 0.1), (30, 0.09)])
    assert (tmp_path / "loss_fixed_batch.csv").read_text().splitlines() == \
        ["step,loss", "0,0.200000", "10,0.150000", "20,0.100000", "30,0.090000"]
    with_fixed = Image.open(tmp_path / "loss.png").size
    assert with_fixed[0] == alone[0] and with_fixed[1] > 1.5 * alone[1]  # a second panel
