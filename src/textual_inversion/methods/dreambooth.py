"""DreamBooth (Ruiz et al. 2022): the whole UNet (and optionally the text encoders) is fine-tuned.

Prior preservation (class images made once by the frozen model) is handled by the shared loop;
this method only says what learns and writes the result as a diffusers pipeline folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

PIPELINE_DIR = "pipeline"


class DreamBooth:
    """Every UNet weight learns; with `train_text_encoder`, every text-encoder weight too."""

    name = "dreambooth"

    def __init__(self, config):
        self.config = config
        self.modules: dict[str, torch.nn.Module] = {}
        self.pipe = None

    def prepare(self, pipe) -> None:
        self.pipe = pipe
        self.modules["unet"] = pipe.unet
        if self.config.train_text_encoder:
            for attribute in ("text_encoder", "text_encoder_2"):
                if getattr(pipe, attribute, None) is not None:
                    self.modules[attribute] = getattr(pipe, attribute)
        for module in self.modules.values():
            module.requires_grad_(True)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for module in self.modules.values() for p in module.parameters()]

    def parameter_groups(self, lr: float) -> list[dict]:
        return [{"params": self.trainable_parameters(), "lr": lr}]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{key}": value.detach().clone()
                for name, module in self.modules.items() for key, value in module.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, module in self.modules.items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def save(self, output_dir: Path, metadata: dict[str, str]) -> list[Path]:
        """`save_pretrained` into a staging folder, then swap it in as `pipeline/`."""
        output_dir = Path(output_dir)
        final = output_dir / PIPELINE_DIR
        staging = Path(tempfile.mkdtemp(prefix=".pipeline.", dir=output_dir))
        self.pipe.save_pretrained(staging, safe_serialization=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        return [final]

    def release(self) -> None:
        for module in self.modules.values():
            module.requires_grad_(False)
