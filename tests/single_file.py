"""Write a diffusers SD1-style pipeline as an original (CompVis/LDM) single-file checkpoint.

The inverse of the key renaming diffusers does in `from_single_file`, for any number of blocks and
layers per block, so tests can make the kind of `.safetensors` file AUTOMATIC1111 users download.
"""

import torch
from safetensors.torch import save_file

RESNET_PARTS = [("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("out_layers.0", "norm2"),
                ("out_layers.3", "conv2"), ("emb_layers.1", "time_emb_proj"), ("skip_connection", "conv_shortcut")]
UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
            "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def unet_prefixes(state: dict, blocks: int, layers: int) -> dict[str, str]:
    """diffusers prefix -> LDM prefix for every block of the UNet."""
    has = lambda prefix: any(key.startswith(prefix) for key in state)  # noqa: E731
    prefixes = {}
    for i in range(blocks):
        for j in range(layers):
            index = (layers + 1) * i + j + 1
            prefixes[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{index}.0."
            prefixes[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{index}.1."
        prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(layers + 1) * (i + 1)}.0.op."
        for j in range(layers + 1):
            index = (layers + 1) * i + j
            prefixes[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{index}.0."
            prefixes[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{index}.1."
        upsample_slot = 2 if has(f"up_blocks.{i}.attentions.") else 1
        prefixes[f"up_blocks.{i}.upsamplers.0."] = f"output_blocks.{(layers + 1) * i + layers}.{upsample_slot}."
    prefixes["mid_block.attentions.0."] = "middle_block.1."
    for j in range(2):
        prefixes[f"mid_block.resnets.{j}."] = f"middle_block.{2 * j}."
    return prefixes


def convert_unet(state: dict, blocks: int, layers: int) -> dict:
    prefixes = unet_prefixes(state, blocks, layers)
    converted = {}
    for key, value in state.items():
        new = key
        for hf, ldm in UNET_TOP.items():
            if key.startswith(hf + "."):
                new = ldm + key[len(hf):]
        for hf, ldm in prefixes.items():
            if key.startswith(hf):
                rest = key[len(hf):]
                if "resnets" in hf:
                    for ldm_part, hf_part in RESNET_PARTS:
                        rest = rest.replace(hf_part, ldm_part)
                new = ldm + rest
        converted["model.diffusion_model." + new] = value
    return converted


def convert_vae(state: dict, blocks: int, layers: int) -> dict:
    prefixes = {"encoder.mid_block.attentions.0.": "encoder.mid.attn_1.",
                "decoder.mid_block.attentions.0.": "decoder.mid.attn_1.",
                "encoder.conv_norm_out.": "encoder.norm_out.", "decoder.conv_norm_out.": "decoder.norm_out."}
    for side in ("encoder", "decoder"):
        for j in range(2):
            prefixes[f"{side}.mid_block.resnets.{j}."] = f"{side}.mid.block_{j + 1}."
    for i in range(blocks):
        for j in range(layers):
            prefixes[f"encoder.down_blocks.{i}.resnets.{j}."] = f"encoder.down.{i}.block.{j}."
        prefixes[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
        for j in range(layers + 1):
            prefixes[f"decoder.up_blocks.{i}.resnets.{j}."] = f"decoder.up.{blocks - 1 - i}.block.{j}."
        prefixes[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{blocks - 1 - i}.upsample."
    attention_parts = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
    converted = {}
    for key, value in state.items():
        new = key
        for hf, ldm in prefixes.items():
            if key.startswith(hf):
                rest = key[len(hf):].replace("conv_shortcut", "nin_shortcut")
                if "attentions" in hf:
                    for hf_part, ldm_part in attention_parts.items():
                        rest = rest.replace(hf_part, ldm_part)
                    if rest.endswith("weight") and value.dim() == 2:
                        value = value[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
                new = ldm + rest
        converted["first_stage_model." + new] = value
    return converted


def write_sd1_single_file(pipe, path) -> None:
    """Save `pipe` (a StableDiffusionPipeline) as one original-layout .safetensors file."""
    unet_config, vae_config = pipe.unet.config, pipe.vae.config
    checkpoint = {}
    checkpoint.update(convert_unet(pipe.unet.state_dict(), len(unet_config.block_out_channels), unet_config.layers_per_block))
    checkpoint.update(convert_vae(pipe.vae.state_dict(), len(vae_config.block_out_channels), vae_config.layers_per_block))
    for key, value in pipe.text_encoder.state_dict().items():
        # The original layout keeps transformers' old `text_model.` level, which transformers 5 dropped.
        checkpoint["cond_stage_model.transformer." + ("" if key.startswith("text_model.") else "text_model.") + key] = value
    save_file({k: v.contiguous() for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}, str(path))
