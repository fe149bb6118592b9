"""`accelerate launch` on 2 CPU processes (gloo) gives the results of one process with the same global batch."""

import os
import subprocess
import sys

import pytest

from textual_inversion.checkpoints import latest_checkpoint, load_checkpoint

LEARNING_RATES = {"textual-inversion": 1e-2, "lora": 1e-3, "dreambooth": 1e-4, "pivotal": 1e-2}  # each method's usual scale


def train_args(model, images, output_dir, method):
    word = ["--init-token", "cat"] if method in ("textual-inversion", "pivotal") else []  # their option only
    if method == "pivotal":  # the embeddings stop after 2 of the 3 steps: DDP must not wait for their gradients
        word += ["--ti-fraction", "0.5", "--lora-lr", str(LEARNING_RATES[method])]
    return ["train", "--model", model, "--images", str(images), "--token", "<blob>", *word,
            "--method", method, "--lr", str(LEARNING_RATES[method]), "--steps", "3", "--batch-size", "2", "--device", "cpu",
            "--output-dir", str(output_dir)]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["textual-inversion", "lora", "dreambooth", "pivotal"])
def test_two_processes_match_one(method, tiny_sd1_path, image_folder, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "textual_inversion.cli",
                          *train_args(tiny_sd1_path, image_folder, tmp_path / "one", method)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                          "-m", "textual_inversion.cli", *train_args(tiny_sd1_path, image_folder, tmp_path / "two", method)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    single = load_checkpoint(latest_checkpoint(tmp_path / "one"))[0]
    double = load_checkpoint(latest_checkpoint(tmp_path / "two"))[0]
    assert single.keys() == double.keys()
    # Gradients are summed in another order across processes, so they agree up to float rounding,
    # which Adam turns into a full step of either sign where a gradient is as small as that rounding
    # (it normalises every step to about lr). So single weights may differ by about lr, but on average
    # they agree to within 0.1 % of one step (a missing gradient average or a wrong batch share moves
    # them by a good fraction of lr), and the losses agree.
    lr = LEARNING_RATES[method]
    for key in single:
        difference = (single[key] - double[key]).abs()
        assert difference.mean() <= 1e-3 * lr, (key, difference.max(), difference.mean())
    losses = [load_checkpoint(latest_checkpoint(tmp_path / run))[1]["history"] for run in ("one", "two")]
    assert [row[0] for row in losses[0]] == [row[0] for row in losses[1]]
    for (_, a, _), (_, b, _) in zip(*losses, strict=True):
        assert abs(a - b) <= 1e-4 * abs(a)


@pytest.mark.slow
def test_generate_splits_the_images_across_processes(tiny_sd1_path, tmp_path):
    import numpy as np
    from PIL import Image

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = ["generate", "--model", tiny_sd1_path, "--prompt", "a photo of a cat", "--num-images", "3", "--steps", "2",
            "--device", "cpu"]
    one = subprocess.run([sys.executable, "-m", "textual_inversion.cli", *args, "--output-dir", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=600)
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                          "-m", "textual_inversion.cli", *args, "--output-dir", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir()) == ["000000.png", "000001.png", "000002.png", "grid.png"]
    for name in names:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "one" / name)), np.asarray(Image.open(tmp_path / "two" / name)))
