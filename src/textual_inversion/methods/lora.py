"""LoRA DreamBooth through peft: low-rank adapters on the attention projections learn; nothing else.

Targets are the ones diffusers' own LoRA scripts use for SD and SDXL. The file written is diffusers'
`pytorch_lora_weights.safetensors` (loaded by `pipe.load_lora_weights(dir)`), plus on request the
kohya layout that AUTOMATIC1111 and ComfyUI read.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from diffusers.utils import (
    convert_all_state_dict_to_peft,
    convert_state_dict_to_diffusers,
    convert_state_dict_to_kohya,
)
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from ..atomic import atomic_path

LORA_FILE = "pytorch_lora_weights.safetensors"
KOHYA_FILE = "lora_kohya.safetensors"
UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


class LoRA:
    """Rank-`config.rank` adapters on the UNet (and, with `lora_text_encoder`, on the text encoders)."""

    name = "lora"

    def __init__(self, config):
        self.config = config
        self.modules: dict[str, torch.nn.Module] = {}  # "unet", "text_encoder", "text_encoder_2"
        self.pipeline_class = None

    def adapter_config(self, targets: list[str]) -> LoraConfig:
        return LoraConfig(r=self.config.rank, lora_alpha=self.config.lora_alpha or self.config.rank,
                          init_lora_weights="gaussian", target_modules=targets)

    def prepare(self, pipe) -> None:
        torch.manual_seed(self.config.seed)  # peft draws the initial A matrices from the global generator
        self.pipeline_class = type(pipe)
        pipe.unet.add_adapter(self.adapter_config(UNET_TARGETS))
        self.modules["unet"] = pipe.unet
        if self.config.lora_text_encoder:
            for attribute in ("text_encoder", "text_encoder_2"):
                encoder = getattr(pipe, attribute, None)
                if encoder is not None:
                    encoder.add_adapter(self.adapter_config(TEXT_ENCODER_TARGETS))
                    self.modules[attribute] = encoder

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for module in self.modules.values() for p in module.parameters() if p.requires_grad]

    def parameter_groups(self, lr: float) -> list[dict]:
        return [{"params": self.trainable_parameters(), "lr": lr}]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{key}": value.detach().clone()
                for name, module in self.modules.items() for key, value in get_peft_model_state_dict(module).items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, module in self.modules.items():
            prefix = f"{name}."
            own = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
            set_peft_model_state_dict(module, own)

    def save(self, output_dir: Path, metadata: dict[str, str]) -> list[Path]:
        """Write diffusers' LoRA file (and the kohya copy with `kohya_copy`), atomically."""
        output_dir = Path(output_dir)
        layers = {f"{name}_lora_layers": convert_state_dict_to_diffusers(get_peft_model_state_dict(module))
                  for name, module in self.modules.items()}
        adapter_metadata = {f"{name}_lora_adapter_metadata": module.peft_config["default"].to_dict()
                            for name, module in self.modules.items()}
        with tempfile.TemporaryDirectory(dir=output_dir) as staging:
            self.pipeline_class.save_lora_weights(staging, **layers, **adapter_metadata, safe_serialization=True)
            os.replace(Path(staging) / LORA_FILE, output_dir / LORA_FILE)
        written = [output_dir / LORA_FILE]
        if self.config.kohya_copy:
            kohya = convert_state_dict_to_kohya(convert_all_state_dict_to_peft(load_file(output_dir / LORA_FILE)))
            # diffusers' converter writes alpha = rank (scale 1); kohya's readers scale by alpha / rank.
            alpha = torch.tensor(float(self.config.lora_alpha or self.config.rank))
            kohya = {k: alpha.clone() if k.endswith(".alpha") else v for k, v in kohya.items()}
            with atomic_path(output_dir / KOHYA_FILE) as temporary:
                save_file({k: v.contiguous() for k, v in kohya.items()}, str(temporary),
                          metadata={k: str(v) for k, v in metadata.items()})
            written.append(output_dir / KOHYA_FILE)
        return written

    def release(self) -> None:
        """The adapters stay on the pipeline, so it goes on generating with what it learned."""
        for module in self.modules.values():
            module.requires_grad_(False)


