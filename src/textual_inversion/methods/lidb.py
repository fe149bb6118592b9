"""Lightweight DreamBooth (LiDB): a rank-1 update per attention projection through frozen random projections.

Only `down_dim + up_dim` numbers per layer learn (paper: 100 + 50, about 30K for Stable Diffusion).
Writes `lidb_weights.safetensors` (train matrices + aux seed) and the same update as a rank-1
`pytorch_lora_weights.safetensors`, so `generate --concept` and diffusers' `load_lora_weights` use it.
With `lidb_down="token"` the down factor is fixed to a reader of the token (`token_readers`) and only
`up_train` learns. The layers themselves are in `lidb_layers.py`, the files in `lidb_file.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..options import option
from ..outputs import LIDB, LORA, OUTPUT_FILES
from .base import Method, MethodOptions

logger = logging.getLogger(__name__)


@dataclass
class LiDBOptions(MethodOptions):
    down_dim: int = option(100, "width of the frozen random down projection (paper 100; clamped to each layer)")
    up_dim: int = option(50, "width of the frozen random up projection (paper 50; clamped to each layer)")
    lidb_layers: str = option("all", "which projections learn: every attention projection (paper) or only the "
                              "cross-attention keys and values, where the prompt enters (as Custom Diffusion)",
                              ("all", "cross-kv"))
    lidb_down: str = option("learn", "the down factor learns (paper), or is fixed to a reader of the token's text "
                            "features, so the update changes only what the token says (needs --lidb-layers cross-kv)",
                            ("learn", "token"))


class LiDB(Method):
    """LiDB train matrices on the UNet attention projections of `lidb_layers`; aux matrices from the seed."""

    name = "lidb"
    summary = "rank-1 lightweight DreamBooth weights through frozen random projections"
    options_class = LiDBOptions
    default_lr = 1e-3

    def __init__(self, config):
        super().__init__(config)
        self.layers: dict = {}  # UNet projection name -> its LiDBLinear
        self.pipeline_class = None

    @classmethod
    def validate(cls, config) -> None:
        options = config.options
        if options.down_dim < 1 or options.up_dim < 1:
            raise UserError("--down-dim and --up-dim must be at least 1 (the paper uses 100 and 50)")
        if options.lidb_down == "token" and options.lidb_layers != "cross-kv":
            raise UserError("--lidb-down token reads the prompt's text features, which only the cross-attention keys "
                            "and values see: add --lidb-layers cross-kv")

    def prepare(self, pipe, data) -> None:
        from .lidb_layers import attach, target_layers, token_readers, token_states

        options = self.options
        self.pipeline_class = type(pipe)
        self.shapes = target_layers(pipe.unet, options.down_dim, options.up_dim, options.lidb_layers)
        self.layers = attach(pipe.unet, self.shapes, self.config.seed)
        if options.lidb_down == "token":  # read the token where the loop will show it: in the training prompts
            prompts = list(dict.fromkeys(caption for captions in data.captions for caption in captions))
            states, on_token = token_states(pipe, self.config.token, prompts)
            readers = token_readers(states, on_token, self.shapes, self.config.seed)
            for name, layer in self.layers.items():
                layer.down_train.requires_grad_(False)
                layer.down_train.copy_(readers[name].to(layer.down_train.device))

    def parameter_groups(self, lr: float) -> list[dict]:
        learning = [p for layer in self.layers.values() for p in (layer.down_train, layer.up_train) if p.requires_grad]
        return [{"params": learning, "lr": lr}]

    def state_dict(self) -> dict:
        return {f"{name}.{part}": getattr(layer, part).detach().clone()
                for name, layer in self.layers.items() for part in ("down_train", "up_train")}

    def load_state_dict(self, state: dict) -> None:
        import torch

        with torch.no_grad():
            for name, layer in self.layers.items():
                layer.down_train.copy_(state[f"{name}.down_train"])
                layer.up_train.copy_(state[f"{name}.up_train"])

    def save(self, folder: Path, metadata: dict[str, str]) -> dict[str, Path]:
        from .lidb_file import write_lidb, write_rank1_lora
        from .lidb_layers import as_lora_factors

        output_dir, options = Path(folder), self.options
        train = {name: (layer.down_train, layer.up_train) for name, layer in self.layers.items()}
        lidb = write_lidb(output_dir / OUTPUT_FILES[LIDB], train, self.config.seed, options.down_dim, options.up_dim,
                          metadata)
        numbers = sum(p.numel() for p in self.trainable_parameters())
        logger.info("LiDB: %d trained numbers in %d layers, %s is %d bytes", numbers, len(self.layers), lidb.name,
                    lidb.stat().st_size)
        factors = {name: as_lora_factors(layer) for name, layer in self.layers.items()}
        return {LIDB: lidb, LORA: write_rank1_lora(output_dir, self.pipeline_class, factors)}

    def release(self) -> None:
        """The LiDB layers stay on the pipeline, so it goes on generating with what it learned."""
        for parameter in self.trainable_parameters():
            parameter.requires_grad_(False)
