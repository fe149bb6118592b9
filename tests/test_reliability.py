"""Crashes lose nothing: kill -9 then --resume, a full disk while saving, NaN loss, two runs on one folder."""

import dataclasses
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from textual_inversion import UserError, train
from textual_inversion.checkpoints import latest_checkpoint, save_checkpoint
from textual_inversion.rundir import RunLock


def train_command(model, images, output_dir, steps):
    return [sys.executable, "-m", "textual_inversion.cli", "train", "--model", model, "--images", str(images),
            "--token", "<blob>", "--init-token", "cat", "--steps", str(steps), "--lr", "0.05",
            "--checkpoint-every", "2", "--device", "cpu", "--output-dir", str(output_dir)]


@pytest.mark.slow
def test_kill_9_at_a_random_moment_then_resume_is_bit_identical(tiny_sd1_path, image_folder, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    steps = 200  # long enough that a kill within 1.5 s of the first checkpoint lands mid-run
    straight = tmp_path / "straight"
    subprocess.run(train_command(tiny_sd1_path, image_folder, straight, steps), check=True, env=env,
                   capture_output=True, timeout=300)

    killed = tmp_path / "killed"
    process = subprocess.Popen(train_command(tiny_sd1_path, image_folder, killed, steps), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and latest_checkpoint(killed) is None:
        time.sleep(0.05)
    time.sleep(random.Random().uniform(0.0, 1.5))  # somewhere in the middle of the run
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "learned_embeds.safetensors").exists(), "the run finished before it was killed"
    status = json.loads((killed / "run.json").read_text())["status"]
    assert status == "running"

    resumed = subprocess.run([*train_command(tiny_sd1_path, image_folder, killed, steps), "--resume"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert torch.equal(load_file(straight / "learned_embeds.safetensors")["<blob>"],
                       load_file(killed / "learned_embeds.safetensors")["<blob>"])


def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path):
    weights = {"text_encoder": torch.randn(2, 768)}
    first = save_checkpoint(tmp_path, 2, weights, {"step": 2})
    code = f"""
import resource, torch, sys
sys.path.insert(0, {str(os.getcwd() + '/src')!r})
from textual_inversion.checkpoints import save_checkpoint
from textual_inversion.errors import UserError
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))  # files may not grow past 2 kB: a full disk
try:
    save_checkpoint({str(tmp_path)!r}, 4, {{"text_encoder": torch.randn(2, 768)}}, {{"step": 4}})
except UserError as error:
    print(error)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            preexec_fn=lambda: signal.signal(signal.SIGXFSZ, signal.SIG_IGN))
    assert "could not write the checkpoint" in result.stdout and f"{first} is intact" in result.stdout, result
    assert latest_checkpoint(tmp_path) == first
    assert torch.equal(load_file(first / "weights.safetensors")["text_encoder"], weights["text_encoder"])
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [first.name]  # no half-written leftovers
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY  # the limit stayed in the child


def test_nan_loss_stops_with_advice_and_keeps_the_last_good_checkpoint(train_config, monkeypatch):
    import textual_inversion.objective as objective

    real_loss = objective.diffusion_loss
    calls = []

    def loss_then_diverge(*args, **kwargs):
        if torch.is_grad_enabled():  # a training step's loss, not the fixed-batch measurement
            calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) > 4 else loss

    monkeypatch.setattr(objective, "diffusion_loss", loss_then_diverge)
    config = dataclasses.replace(train_config, steps=10, batch_size=1, checkpoint_every=2)
    with pytest.raises(UserError, match=r"loss became nan at step 5; the last good checkpoint is .*step-000004.*"
                                        r"Lower --lr or use --mixed-precision no"):
        train(config)
    checkpoint = latest_checkpoint(config.resolved_output_dir())
    assert checkpoint.name == "step-000004"
    assert torch.isfinite(load_file(checkpoint / "weights.safetensors")["text_encoder"]).all()


def loss_turning_nan_at_step(step: int, monkeypatch) -> list:
    """Make the training loss of optimizer step `step` (batch 1, 1-based) non-finite; returns the steps' calls."""
    import textual_inversion.objective as objective

    real_loss = objective.diffusion_loss
    calls = []

    def loss_then_diverge(*args, **kwargs):
        if torch.is_grad_enabled():  # a training step's loss, not the fixed-batch measurement
            calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) == step else loss

    monkeypatch.setattr(objective, "diffusion_loss", loss_then_diverge)
    return calls


def test_a_nan_loss_read_steps_later_still_names_its_step_and_writes_no_checkpoint(train_config, monkeypatch):
    """Without checkpoints, checks, previews or an on_step callback the loop reads losses LOSS_READ_EVERY steps
    at a time."""
    from textual_inversion.training import LOSS_READ_EVERY

    calls = loss_turning_nan_at_step(3, monkeypatch)
    config = dataclasses.replace(train_config, steps=LOSS_READ_EVERY + 2, batch_size=1, checkpoint_every=0)
    with pytest.raises(UserError, match=r"loss became nan at step 3; no checkpoint was written yet"):
        train(config)
    assert len(calls) == LOSS_READ_EVERY  # the run went on to the read, not further
    assert latest_checkpoint(config.resolved_output_dir()) is None


def test_previews_are_not_drawn_from_vectors_a_nan_loss_spoiled(train_config, monkeypatch):
    calls = loss_turning_nan_at_step(3, monkeypatch)
    config = dataclasses.replace(train_config, steps=8, batch_size=1, checkpoint_every=0, validation_every=2,
                                 validation_prompt="a photo of <blob>", validation_steps=1, num_validation_images=1)
    with pytest.raises(UserError, match=r"loss became nan at step 3"):
        train(config)
    assert len(calls) == 4  # read before step 4's previews
    assert sorted(p.name for p in (config.resolved_output_dir() / "previews").iterdir()) == ["step-000002.png"]


def test_two_runs_cannot_share_an_output_folder(train_config):
    output_dir = train_config.resolved_output_dir()
    output_dir.mkdir(parents=True)
    with RunLock(output_dir):
        with pytest.raises(UserError, match="another training run is writing there"):
            train(train_config)
    train(train_config)  # the lock is gone with its holder
