"""Lightweight DreamBooth (LiDB): a rank-1 update per attention projection through frozen random projections.

Only `down_dim + up_dim` numbers per layer learn (paper: 100 + 50, about 30K for Stable Diffusion).
Writes `lidb_weights.safetensors` (train matrices + aux seed) and the same update as a rank-1
`pytorch_lora_weights.safetensors`, so `generate --concept` and diffusers' `load_lora_weights` use it.
With `lidb_down="token"` the down factor is fixed to a reader of the token (`token_readers`) and only
`up_train` learns.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import UserError
from ..hyper.lidb import as_lora_factors, attach, target_layers, token_readers
from ..hyper.lidb_file import LIDB_FILE, write_lidb, write_rank1_lora
from ..templates import TEMPLATES

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
        if self.config.lidb_down == "token":
            states, on_token = token_states(pipe, self.config.token, TEMPLATES[self.config.property])
            readers = token_readers(states, on_token, self.shapes, self.config.seed)
            for name, layer in self.layers.items():
                layer.down_train.requires_grad_(False)
                layer.down_train.copy_(readers[name].to(layer.down_train.device))

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for layer in self.layers.values() for p in (layer.down_train, layer.up_train) if p.requires_grad]

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
                          {**metadata, "lidb_layers": self.config.lidb_layers, "lidb_down": self.config.lidb_down})
        numbers = sum(p.numel() for p in self.trainable_parameters())
        logger.info("LiDB: %d trained numbers in %d layers, %s is %d bytes", numbers, len(self.layers), lidb.name,
                    lidb.stat().st_size)
        factors = {name: as_lora_factors(layer) for name, layer in self.layers.items()}
        return [lidb, write_rank1_lora(output_dir, self.pipeline_class, factors)]

    def release(self) -> None:
        """The LiDB layers stay on the pipeline, so it goes on generating with what it learned."""
        for parameter in self.trainable_parameters():
            parameter.requires_grad_(False)


@torch.no_grad()
def token_states(pipe, token: str, templates: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The text features of the training prompts (prompts, positions, dim) and where the token's pieces sit."""
    prompts = [template.format(token) for template in templates]
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    pieces = pipe.tokenizer(token, add_special_tokens=False).input_ids  # "sks" may be several pieces
    on_token = torch.zeros(ids.shape, dtype=torch.bool)
    for row, prompt_ids in enumerate(ids.tolist()):
        for start in range(len(prompt_ids) - len(pieces) + 1):
            if prompt_ids[start:start + len(pieces)] == pieces:
                on_token[row, start:start + len(pieces)] = True
    if not on_token.any():
        raise UserError(f"--token {token}: not found in the tokenised training prompts; pick a plain word")
    # SD returns (embeds, negative embeds); SDXL (embeds, negative, pooled, negative pooled): embeds first.
    encoded = pipe.encode_prompt(prompts, device=pipe.unet.device, num_images_per_prompt=1,
                                 do_classifier_free_guidance=False)[0]
    return encoded.float().cpu(), on_token
