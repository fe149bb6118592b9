"""Lightweight DreamBooth (LiDB): a rank-1 update per attention projection through frozen random projections.

Only `down_dim + up_dim` numbers per layer learn (paper: 100 + 50, about 30K for Stable Diffusion).
Writes `lidb_weights.safetensors` (train matrices + aux seed) and the same update as a rank-1
`pytorch_lora_weights.safetensors`, so `generate --concept` and diffusers' `load_lora_weights` use it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..hyper.lidb import as_lora_factors, attach, target_layers
from ..hyper.lidb_file import LIDB_FILE, write_lidb, write_rank1_lora

logger = logging.getLogger(__name__)


class LiDB:
    """LiDB train matrices on the UNet attention projections of `config.lidb_layers`; aux matrices from `config.seed`."""

    name = "lidb"

    def __init__(self, config):
        self.config = config
        self.layers = {}
        self.pipeline_class = None

    def prepare(self, pipe) -> None:
        self.pipeline_class = type(pipe)
        self.shapes = target_layers(pipe.unet, self.config.down_dim, self.config.up_dim, self.config.lidb_layers)
        self.layers = attach(pipe.unet, self.shapes, self.config.seed)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for layer in self.layers.values() for p in (layer.down_train, layer.up_train)]

    def parameter_groups(self, lr: float) -> list[dict]:
        return [{"params": self.trainable_parameters(), "lr": lr}]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{part}": getattr(layer, part).detach().clone()
                for name, layer in self.layers.items() for part in ("down_train", "up_train")}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, layer in self.layers.items():
                layer.down_train.copy_(state[f"{name}.down_train"])
                layer.up_train.copy_(state[f"{name}.up_train"])

    def save(self, output_dir: Path, metadata: dict[str, str]) -> list[Path]:
        output_dir = Path(output_dir)
        train = {name: (layer.down_train, layer.up_train) for name, layer in self.layers.items()}
        lidb = write_lidb(output_dir / LIDB_FILE, train, self.config.seed, self.config.down_dim, self.config.up_dim,
                          {**metadata, "lidb_layers": self.config.lidb_layers})
        numbers = sum(p.numel() for p in self.trainable_parameters())
        logger.info("LiDB: %d trained numbers in %d layers, %s is %d bytes", numbers, len(self.layers), lidb.name,
                    lidb.stat().st_size)
        factors = {name: as_lora_factors(layer) for name, layer in self.layers.items()}
        return [lidb, write_rank1_lora(output_dir, self.pipeline_class, factors)]

    def release(self) -> None:
        """The LiDB layers stay on the pipeline, so it goes on generating with what it learned."""
        for parameter in self.trainable_parameters():
            parameter.requires_grad_(False)
