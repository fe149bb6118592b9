"""The output folder of a run: who owns it (a lock), what it holds (run.json), its loss files."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
from pathlib import Path

from .atomic import atomic_path, write_text_atomic
from .checkpoints import CHECKPOINT_DIR, latest_checkpoint
from .errors import UserError

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
PREVIEW_DIR = "previews"
FIXED_BATCH_LOSS_FILE = "loss_fixed_batch.csv"


class RunLock:
    """An exclusive lock on an output folder, released by the OS even if the process is killed.

    The lock file is removed on release, so a finished run leaves no `.lock` behind (a killed run
    leaves one, which the next run locks as usual).
    """

    def __init__(self, output_dir: Path):
        self.path = Path(output_dir) / LOCK_FILE
        self.handle = None

    def __enter__(self) -> RunLock:
        while True:
            self.handle = open(self.path, "a+")
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.handle.close()
                raise UserError(f"--output-dir {self.path.parent}: another training run is writing there; "
                                "wait for it or choose another --output-dir") from None
            # We may have opened the file just before its holder removed it and let go: then we hold a
            # lock on a file no longer at self.path, which the next run would not see. Try again.
            if self._holds_the_file_at_path():
                return self
            self.handle.close()

    def _holds_the_file_at_path(self) -> bool:
        try:
            return os.path.samestat(os.fstat(self.handle.fileno()), os.stat(self.path))
        except FileNotFoundError:
            return False

    def __exit__(self, *exc) -> None:
        # Remove the file while still holding the lock, then let go. Anyone who opened it before the
        # removal either fails to lock it now (LOCK_NB: no one waits) or locks it after we let go and
        # then sees, in __enter__, that it is no longer the file at self.path, and starts over.
        try:
            self.path.unlink(missing_ok=True)
        finally:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()


def check_output_dir(config) -> Path:
    """Refuse a folder holding another run unless resuming or overwriting; writes nothing."""
    output_dir = config.resolved_output_dir()
    has_checkpoint = latest_checkpoint(output_dir) is not None
    if config.resume and not has_checkpoint:
        raise UserError(f"--resume: {output_dir} holds no checkpoint to resume from; drop --resume to start anew")
    if not config.resume and not config.overwrite and ((output_dir / RUN_FILE).is_file() or has_checkpoint):
        raise UserError(f"--output-dir {output_dir}: holds another run; pass --resume to continue it, "
                        "--overwrite to replace it, or choose another --output-dir")
    return output_dir


def create_output_dir(output_dir: Path) -> Path:
    """Create the folder and prove it is writable."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UserError(f"--output-dir {output_dir}: cannot write there ({error.strerror}); choose another folder") from None
    return output_dir


def clear_previous_run(output_dir: Path) -> None:
    """With --overwrite: remove the old run's checkpoints and previews.

    Checkpoints could be resumed by mistake; previews of another run, next to the new run's (which
    may come at other steps), would read as its progress.
    """
    shutil.rmtree(output_dir / CHECKPOINT_DIR, ignore_errors=True)
    shutil.rmtree(output_dir / PREVIEW_DIR, ignore_errors=True)


def write_run_file(output_dir: Path, config, status: str, extra: dict | None = None) -> None:
    record = {"status": status, "config": dataclasses.asdict(config), **(extra or {})}
    write_text_atomic(output_dir / RUN_FILE, json.dumps(record, indent=2, default=str))


def read_run_file(output_dir: Path) -> dict | None:
    """The run.json record of `output_dir`; None if there is none or it cannot be read (being written, say)."""
    try:
        record = json.loads((Path(output_dir) / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, or not JSON / not UTF-8
        return None
    return record if isinstance(record, dict) else None


def require_finished(output_dir: Path, status: str | None) -> None:
    """UserError unless a run's run.json `status` says it finished: what it holds may be a checkpoint's."""
    if status != "finished":
        raise UserError(f"{output_dir}: the run has not finished ({RUN_FILE} says {status}); finish it with "
                        "`train --resume` first")


def write_loss_files(output_dir: Path, history: list[tuple[int, float, float]],
                     fixed_batch: list[tuple[int, float]] | None = None) -> None:
    """loss.csv (step, loss, lr), loss_fixed_batch.csv (step, loss) and loss.png: the training loss with its
    running mean and, below it, the loss on the fixed batch, which is what shows the learning."""
    lines = ["step,loss,lr"] + [f"{step},{loss:.6f},{lr:.6g}" for step, loss, lr in history]
    write_text_atomic(output_dir / "loss.csv", "\n".join(lines) + "\n")
    if fixed_batch:
        lines = ["step,loss"] + [f"{step},{loss:.6f}" for step, loss in fixed_batch]
        write_text_atomic(output_dir / FIXED_BATCH_LOSS_FILE, "\n".join(lines) + "\n")
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row[0] for row in history]
    losses = [row[1] for row in history]
    window = max(1, len(losses) // 20)
    smoothed = [sum(losses[max(0, i - window + 1): i + 1]) / len(losses[max(0, i - window + 1): i + 1])
                for i in range(len(losses))]
    figure, panels = plt.subplots(2 if fixed_batch else 1, 1, figsize=(6, 6 if fixed_batch else 3.5), dpi=100,
                                  sharex=True, squeeze=False)
    axes = panels[0][0]
    axes.plot(steps, losses, alpha=0.3, label="loss")
    axes.plot(steps, smoothed, label=f"mean of {window}")
    axes.set_title("training loss (new noise and timesteps every step)", fontsize=10)
    axes.set_ylabel("diffusion loss")
    axes.legend()
    if fixed_batch:
        axes = panels[1][0]
        axes.plot([step for step, _ in fixed_batch], [loss for _, loss in fixed_batch], marker=".", color="C2")
        if fixed_batch[0][0] == 0:  # below this line the token fits the pictures better than the word it started from
            axes.axhline(fixed_batch[0][1], linestyle="--", color="grey", label="at step 0")
            axes.legend()
        axes.set_title("loss on a fixed batch (same noise and timesteps every time)", fontsize=10)
        axes.set_ylabel("diffusion loss")
    axes.set_xlabel("step")
    figure.tight_layout()
    with atomic_path(output_dir / "loss.png") as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)


def read_loss_file(output_dir: Path) -> list[tuple[int, float, float]]:
    """The rows of loss.csv (step, loss, lr); none if the run has not written one yet."""
    path = Path(output_dir) / "loss.csv"
    if not path.is_file():
        return []
    rows = [line.split(",") for line in path.read_text(encoding="utf-8").splitlines()[1:] if line]
    return [(int(step), float(loss), float(lr)) for step, loss, lr in rows]


def remove_stale_temporaries(output_dir: Path) -> None:
    """Temporary files left by a killed run (atomic writes that never completed)."""
    for leftover in list(output_dir.glob(".*.tmp")) + list((output_dir / CHECKPOINT_DIR).glob(".step-*")):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
