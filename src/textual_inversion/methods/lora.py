"""LoRA DreamBooth through peft: low-rank adapters on the denoiser's layers learn; nothing else.

Targets are by default the ones diffusers' own LoRA scripts use for SD, SDXL, SD3 and Flux (and the attention
projections for Z-Image). For the UNet families `--lora-layers` widens them as kohya's scripts do:
`transformer` (every linear layer of the transformer blocks, kohya's plain LoRA) or `all` (those and the
ResNet and resampling convolutions, kohya's LoCon), for what attention alone cannot change, such as a shape.
The file written is diffusers' `pytorch_lora_weights.safetensors` (loaded by `pipe.load_lora_weights(dir)`),
plus on request, for the UNet families, the kohya layout that AUTOMATIC1111 and ComfyUI read.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..options import option
from ..outputs import KOHYA_LORA, LORA, OUTPUT_FILES
from .base import Method, MethodOptions

UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
# peft matches each name as the end of a module's name; inside the UNet these are exactly the layers kohya's
# networks/lora.py adapts in Transformer2DModel (plain LoRA) and, with conv_dim, in ResnetBlock2D,
# Downsample2D and Upsample2D (LoCon; one rank for all here, where kohya has a second for 3x3 convolutions).
UNET_LAYER_TARGETS = {
    "attention": UNET_TARGETS,
    "transformer": [*UNET_TARGETS, "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"],
}
UNET_LAYER_TARGETS["all"] = [*UNET_LAYER_TARGETS["transformer"], "conv1", "conv2", "conv_shortcut", "time_emb_proj",
                             "downsamplers.0.conv", "upsamplers.0.conv"]
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]  # CLIP's attention
# The transformers' targets as diffusers' train_dreambooth_lora_flux.py and _sd3.py set them (diffusers 0.42):
# both streams' attention, and for Flux the feed-forward layers too.
SD3_TARGETS = ["attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out", "attn.to_k",
               "attn.to_out.0", "attn.to_q", "attn.to_v"]
TRANSFORMER_TARGETS = {"flux": [*SD3_TARGETS, "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"],
                       "sd3": SD3_TARGETS, "z-image": ["to_k", "to_q", "to_v", "to_out.0"]}


@dataclass
class LoRAOptions(MethodOptions):
    rank: int | None = option(None, "LoRA rank (default: the method's on miniworld, listed under it, else 4)", usual=4)
    lora_alpha: float | None = option(None, "LoRA alpha; the update is scaled by alpha / rank (default: the rank)")
    lora_text_encoder: bool = option(False, "also put LoRA adapters on the text encoder(s)")
    kohya_copy: bool = option(False, "also write the LoRA in kohya/AUTOMATIC1111 layout (lora_kohya.safetensors)")
    lora_layers: str | None = option(None, "the UNet's layers that get adapters: attention (as diffusers' scripts), "
                                     "transformer (every linear layer of its transformer blocks, kohya's LoRA) or all "
                                     "(those and the ResNet convolutions, kohya's LoCon; default: the method's on "
                                     "miniworld, listed under it, else attention)", choices=tuple(UNET_LAYER_TARGETS),
                                     usual="attention")


class LoRA(Method):
    """Rank-`rank` adapters on the UNet (and, with `lora_text_encoder`, on the text encoders)."""

    name = "lora"
    summary = "low-rank adapters on the UNet's attention, or more of its layers (peft)"
    options_class = LoRAOptions
    default_lr = 1e-4  # diffusers' LoRA DreamBooth example
    # benchmarks/results/concept_sweep.md (lora-all-cosine, lora-former-defaults): the settings that learned the
    # unseen star, which the attention alone did not learn and a constant rate let come and go; they then reached
    # the targets on 15 of 16 runs of eight concepts they were not chosen on (the usual defaults: 2 of 10 runs of
    # five), and on none of the striped ones (docs/subjects.md); all on the miniworld shipped until 2026-12-05. On the
    # one shipped since: 7 of 12 runs, the stars, the teal heart and the striped style among them
    # (concept_sweep_2a05c6767420493f.md).
    miniworld_defaults = {"rank": 8, "lr": 1e-3, "lora_layers": "all", "lr_scheduler": "cosine", "batch_size": 4,
                          "steps": 3200}
    prior_preservation = True
    transformer_families = True

    def __init__(self, config):
        super().__init__(config)
        # "unet" or "transformer", "text_encoder", "text_encoder_2" -> the module holding adapters
        self.modules: dict = {}
        self.pipeline_class = None
        self.convert_to_diffusers = True  # the UNet families' files use diffusers' key names; the others peft's

    @classmethod
    def validate(cls, config) -> None:
        options = config.options
        if options.rank < 1 or (options.lora_alpha is not None and options.lora_alpha <= 0):
            raise UserError(f"--rank {options.rank} must be at least 1 and --lora-alpha positive")

    def alpha(self) -> float:
        return self.options.lora_alpha or self.options.rank

    def adapter_config(self, targets: list[str]):
        from peft import LoraConfig

        return LoraConfig(r=self.options.rank, lora_alpha=self.alpha(), init_lora_weights="gaussian",
                          target_modules=targets)

    def prepare(self, pipe, data) -> None:
        import torch

        from ..models import is_transformer_family, model_family

        torch.manual_seed(self.config.seed)  # peft draws the initial A matrices from the global generator
        self.pipeline_class = type(pipe)
        transformer = is_transformer_family(pipe)
        if transformer:
            family = model_family(pipe)
            if self.options.kohya_copy:
                raise UserError(f"--kohya-copy: the kohya layout is written for SD 1.x, 2.x and XL only, not {family}; "
                                "leave it out (ComfyUI loads diffusers' file)")
            if self.options.lora_layers != "attention":
                raise UserError(f"--lora-layers {self.options.lora_layers}: {family} is a transformer, whose targets are "
                                "set as diffusers' scripts set them; leave the option out")
            if self.options.lora_text_encoder and family == "z-image":
                raise UserError("--lora-text-encoder: Z-Image's language-model encoder takes no LoRA here; leave it out")
            pipe.transformer.add_adapter(self.adapter_config(TRANSFORMER_TARGETS[family]))
            self.modules["transformer"] = pipe.transformer
            self.convert_to_diffusers = False  # as diffusers' Flux and SD3 scripts save them
        else:
            pipe.unet.add_adapter(self.adapter_config(UNET_LAYER_TARGETS[self.options.lora_layers]))
            # diffusers' converter renames only the attention's factors; a file mixing its names with peft's has
            # the attention's adapters dropped by diffusers' own loader, so wider targets keep peft's names
            self.convert_to_diffusers = self.options.lora_layers == "attention"
            self.modules["unet"] = pipe.unet
        if self.options.lora_text_encoder:  # the CLIP encoders (Flux's T5 takes none, as in diffusers' script)
            for attribute in ("text_encoder", "text_encoder_2"):
                encoder = getattr(pipe, attribute, None)
                if encoder is not None and "CLIP" in type(encoder).__name__:
                    encoder.add_adapter(self.adapter_config(TEXT_ENCODER_TARGETS))
                    self.modules[attribute] = encoder

    def parameter_groups(self, lr: float) -> list[dict]:
        return [{"params": [p for module in self.modules.values() for p in module.parameters() if p.requires_grad],
                 "lr": lr}]

    def state_dict(self) -> dict:
        from peft.utils import get_peft_model_state_dict

        return {f"{name}.{key}": value.detach().clone()
                for name, module in self.modules.items() for key, value in get_peft_model_state_dict(module).items()}

    def load_state_dict(self, state: dict) -> None:
        from peft.utils import set_peft_model_state_dict

        shapes = {key: value.shape for key, value in self.state_dict().items()}
        if {key: value.shape for key, value in state.items()} != shapes:
            # e.g. a run begun before miniworld's defaults changed, resumed without its --rank and --lora-layers
            raise UserError("--resume: the checkpoint's adapters are not the ones this run makes (another --rank, "
                            "--lora-layers or --lora-text-encoder); resume with the options the run began with")
        for name, module in self.modules.items():
            prefix = f"{name}."
            own = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
            set_peft_model_state_dict(module, own)

    def save(self, folder: Path, metadata: dict[str, str]) -> dict[str, Path]:
        """Write diffusers' LoRA file (and the kohya copy with `kohya_copy`), atomically."""
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import save_file

        from ..atomic import atomic_path

        output_dir = Path(folder)
        lora_path, kohya_path = output_dir / OUTPUT_FILES[LORA], output_dir / OUTPUT_FILES[KOHYA_LORA]
        convert = convert_state_dict_to_diffusers if self.convert_to_diffusers else dict
        layers = {f"{name}_lora_layers": convert(get_peft_model_state_dict(module))
                  for name, module in self.modules.items()}
        adapter_metadata = {f"{name}_lora_adapter_metadata": module.peft_config["default"].to_dict()
                            for name, module in self.modules.items()}
        # diffusers writes into a folder; its file then goes in through our atomic writer (whole, and with the
        # mode the umask gives, as every file we write).
        with tempfile.TemporaryDirectory(dir=output_dir) as staging, atomic_path(lora_path) as temporary:
            self.pipeline_class.save_lora_weights(staging, **layers, **adapter_metadata, safe_serialization=True)
            os.replace(Path(staging) / OUTPUT_FILES[LORA], temporary)
        written = {LORA: lora_path}
        if self.options.kohya_copy:
            with atomic_path(kohya_path) as temporary:
                save_file(kohya_state_dict(lora_path, self.alpha()), str(temporary),
                          metadata={k: str(v) for k, v in metadata.items()})
            written[KOHYA_LORA] = kohya_path
        return written

    def release(self) -> None:
        """The adapters stay on the pipeline, so it goes on generating with what it learned."""
        for module in self.modules.values():
            module.requires_grad_(False)


def kohya_state_dict(lora_file: Path, alpha: float) -> dict:
    """The LoRA in diffusers' `lora_file` as kohya's tensors (what AUTOMATIC1111 and ComfyUI read), contiguous."""
    import torch
    from diffusers.utils import convert_all_state_dict_to_peft, convert_state_dict_to_kohya
    from safetensors.torch import load_file

    kohya = convert_state_dict_to_kohya(convert_all_state_dict_to_peft(load_file(lora_file)))
    # diffusers' converter writes alpha = rank (scale 1); kohya's readers scale by alpha / rank.
    alpha_tensor = torch.tensor(float(alpha))
    return {key: alpha_tensor.clone() if key.endswith(".alpha") else value.contiguous() for key, value in kohya.items()}


