"""DreamBooth (Ruiz et al. 2022): the whole UNet (and optionally the text encoders) is fine-tuned.

Prior preservation (class images made once by the frozen model) is handled by the shared loop;
this method only says what learns and writes the result as a diffusers pipeline folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..options import option
from ..outputs import OUTPUT_FILES, PIPELINE
from .base import Method, MethodOptions


@dataclass
class DreamBoothOptions(MethodOptions):
    train_text_encoder: bool = option(False, "also fine-tune the text encoder(s)")


class DreamBooth(Method):
    """Every UNet weight learns; with `train_text_encoder`, every text-encoder weight too."""

    name = "dreambooth"
    summary = "the whole UNet, fine-tuned (a pipeline folder per concept)"
    options_class = DreamBoothOptions
    default_lr = 5e-6  # diffusers' DreamBooth example
    prior_preservation = True

    def __init__(self, config):
        super().__init__(config)
        self.modules: dict = {}  # "unet" (and the text encoders) -> the module that learns
        self.pipe = None

    def prepare(self, pipe, data) -> None:
        self.pipe = pipe
        self.modules["unet"] = pipe.unet
        if self.options.train_text_encoder:
            for attribute in ("text_encoder", "text_encoder_2"):
                if getattr(pipe, attribute, None) is not None:
                    self.modules[attribute] = getattr(pipe, attribute)
        for module in self.modules.values():
            module.requires_grad_(True)

    def parameter_groups(self, lr: float) -> list[dict]:
        return [{"params": [p for module in self.modules.values() for p in module.parameters()], "lr": lr}]

    def state_dict(self) -> dict:
        return {f"{name}.{key}": value.detach().clone()
                for name, module in self.modules.items() for key, value in module.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        for name, module in self.modules.items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def save(self, folder: Path, metadata: dict[str, str]) -> dict[str, Path]:
        """`save_pretrained` into a staging folder, then swap it in as `pipeline/`."""
        from ..atomic import replaced_folder

        final = Path(folder) / OUTPUT_FILES[PIPELINE]
        with replaced_folder(final) as staging:
            self.pipe.save_pretrained(staging, safe_serialization=True)
        return {PIPELINE: final}

    def release(self) -> None:
        for module in self.modules.values():
            module.requires_grad_(False)
