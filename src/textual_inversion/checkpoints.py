"""Resumable checkpoints, each a folder that appears whole or not at all.

`checkpoints/step-000100/` holds the learned tensors (`weights.safetensors`) and the training state
(`state.pt`: optimizer, schedule, step, loss history and the generator that drives all sampling).
A folder is written under a temporary name and renamed when complete, so a kill at any moment leaves
the previous checkpoint intact; resume picks the newest complete one.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import replaced_folder
from .errors import UserError

CHECKPOINT_DIR = "checkpoints"
STEP_PATTERN = re.compile(r"step-(\d+)")


def save_checkpoint(output_dir: Path, step: int, weights: dict[str, torch.Tensor], state: dict, keep: int = 2) -> Path:
    """Write checkpoint `step` atomically and keep only the newest `keep` ones (0: all)."""
    final = Path(output_dir) / CHECKPOINT_DIR / f"step-{step:06d}"
    try:
        with replaced_folder(final) as staging:
            save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(staging / "weights.safetensors"))
            torch.save(state, staging / "state.pt")
    except (OSError, SafetensorError) as error:
        if isinstance(error, SafetensorError) and "I/O error" not in str(error):
            raise
        previous = latest_checkpoint(output_dir)
        kept = f"; the previous checkpoint {previous} is intact" if previous else ""
        reason = getattr(error, "strerror", None) or str(error).split(": ")[-1]
        raise UserError(f"{final}: could not write the checkpoint ({reason}){kept}; free disk space and --resume") from None
    for old in (list_checkpoints(output_dir)[:-keep] if keep else []):
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and STEP_PATTERN.fullmatch(p.name)
             and (p / "weights.safetensors").is_file() and (p / "state.pt").is_file()]
    return sorted(found, key=lambda p: int(STEP_PATTERN.fullmatch(p.name).group(1)))


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Weights and training state of one checkpoint folder (loaded without running pickled code)."""
    try:
        weights = load_file(str(path / "weights.safetensors"))
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file can raise many types
        raise UserError(f"{path}: checkpoint is damaged ({str(error)[:200]}); delete it to resume from an older one") from None
    return weights, state
