"""Atomic writes (atomic.py): files we write get the mode any program's files get under the umask."""

import contextlib
import os
import stat
import subprocess
import sys

import pytest
import torch
from PIL import Image

from textual_inversion.atomic import _host, atomic_path, replaced_folder, write_text_atomic
from textual_inversion.formats import Embedding, write_embedding


@contextlib.contextmanager
def umask(mask):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_follow_the_umask(tmp_path, mask, expected):
    with umask(mask):
        write_text_atomic(tmp_path / "run.json", "{}")
        vectors = {"text_encoder": torch.zeros(1, 768)}
        written = [write_embedding(Embedding("<e>", vectors), tmp_path / "e.safetensors"),  # safetensors
                   write_embedding(Embedding("<e>", vectors), tmp_path / "e.pt", "a1111")]  # torch.save
        with atomic_path(tmp_path / "grid.png") as temporary:  # previews and grids
            Image.new("RGB", (8, 8)).save(temporary, format="PNG")
    for path in [tmp_path / "run.json", *written, tmp_path / "grid.png"]:
        assert mode(path) == expected, path.name
    assert not list(tmp_path.glob(".*.tmp")), "a temporary was left behind"


def test_replacing_a_file_keeps_its_mode(tmp_path):
    private, read_only = tmp_path / "private.json", tmp_path / "read-only.json"
    for path, chosen in ((private, 0o600), (read_only, 0o444)):
        path.write_text("old")
        path.chmod(chosen)
    with umask(0o022):
        write_text_atomic(private, "new")
        write_text_atomic(read_only, "new")  # the mode is applied after the write, so it cannot block it
    assert (mode(private), private.read_text()) == (0o600, "new")
    assert (mode(read_only), read_only.read_text()) == (0o444, "new")


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    final = tmp_path / "pipeline"
    final.mkdir()
    (final / "old.json").write_text("old")
    with umask(0o022), replaced_folder(final) as staging:
        (staging / "unet").mkdir()
        (staging / "unet" / "weights.bin").write_bytes(b"new")
        os.chmod(staging / "unet" / "weights.bin", 0o600)  # as safetensors writes its files
    assert sorted(p.relative_to(final).as_posix() for p in final.rglob("*")) == ["unet", "unet/weights.bin"]
    assert (mode(final / "unet"), mode(final / "unet" / "weights.bin")) == (0o755, 0o644)
    with pytest.raises(RuntimeError), replaced_folder(final) as staging:
        (staging / "half-written.bin").write_bytes(b"")
        raise RuntimeError("killed midway")
    assert (final / "unet" / "weights.bin").read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["pipeline"], "a staging or old folder was left behind"


def test_a_killed_writers_staging_folder_is_removed_by_the_next_one(tmp_path):
    """A build or export killed midway leaves its staging folder; the next write of the same folder removes
    it, and keeps those of writers still running (this process) or on another machine."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)  # its process has exited
    killed = tmp_path / f".model.{_host()}-{dead_pid}-0123abcd"
    running = tmp_path / f".model.{_host()}-{os.getpid()}-4567abcd"
    elsewhere = tmp_path / f".model.{_host()}x-{dead_pid}-89abcdef"
    other_folder = tmp_path / f".vae.{_host()}-{dead_pid}-0123abcd"
    for folder in (killed, running, elsewhere, other_folder):
        folder.mkdir()
        (folder / "half-written.bin").write_bytes(b"")
    with replaced_folder(tmp_path / "model") as staging:
        (staging / "config.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", running.name, elsewhere.name,
                                                                  other_folder.name])


@pytest.mark.parametrize("method", ["pivotal", "dreambooth"])
def test_everything_a_run_writes_follows_the_umask(method, train_config, tmp_path):
    """Embeddings, LoRA files, pipelines, checkpoints, previews, loss files and run.json: 0644 files, 0755
    folders under umask 022 (safetensors' own writes and temporary folders are private by themselves)."""
    from textual_inversion import train

    config = train_config.replaced(method=method, steps=2, checkpoint_every=1, validation_prompt="a <blob>",
                                   validation_every=1, num_validation_images=1, validation_steps=1,
                                   output_dir=str(tmp_path / method))
    with umask(0o022):
        train(config)
    written = list((tmp_path / method).rglob("*"))
    learned = {"pivotal": {"learned_embeds.safetensors", "pytorch_lora_weights.safetensors"},
               "dreambooth": {"pipeline", "diffusion_pytorch_model.safetensors"}}[method]
    assert learned | {"weights.safetensors", "run.json", "loss.png", "step-000002.png"} <= {p.name for p in written}
    for path in written:
        assert mode(path) == (0o755 if path.is_dir() else 0o644), path.relative_to(tmp_path)
