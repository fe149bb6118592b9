"""Pivotal tuning: new token embeddings and LoRA adapters learn together.

The embeddings use `--lr`, the adapters `--lora-lr`; with `--ti-fraction f` the embeddings stop
learning after the first f x steps (the "pivot"), and the adapters refine around them.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .lora import LoRA
from .textual_inversion import TextualInversion


class PivotalTuning:
    name = "pivotal"

    def __init__(self, config):
        self.config = config
        self.embeddings = TextualInversion(config)
        self.lora = LoRA(config)
        self.embedding_steps = math.ceil(config.ti_fraction * config.steps)

    def prepare(self, pipe) -> None:
        self.embeddings.prepare(pipe)
        self.lora.prepare(pipe)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return self.embeddings.trainable_parameters() + self.lora.trainable_parameters()

    def parameter_groups(self, lr: float) -> list[dict]:
        return self.embeddings.parameter_groups(lr) + self.lora.parameter_groups(self.config.lora_lr)

    def step_started(self, step: int) -> None:
        """Freeze the embeddings once their share of the steps is done (AdamW skips them then)."""
        for rows in self.embeddings.trainable_parameters():
            rows.requires_grad_(step < self.embedding_steps)

    def step_finished(self) -> None:
        self.embeddings.step_finished()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**{f"ti.{k}": v for k, v in self.embeddings.state_dict().items()},
                **{f"lora.{k}": v for k, v in self.lora.state_dict().items()}}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.embeddings.load_state_dict({k[3:]: v for k, v in state.items() if k.startswith("ti.")})
        self.lora.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lora.")})

    def save(self, output_dir: Path, metadata: dict[str, str]) -> list[Path]:
        return self.embeddings.save(output_dir, metadata) + self.lora.save(output_dir, metadata)

    def release(self) -> None:
        self.embeddings.release()
        self.lora.release()
