"""Sizes of the miniworld model's components (Stable Diffusion layout, scaled down).

64x64 RGB images -> VAE (3 down blocks, factor 4) -> 16x16x4 latents. A small CLIP
text encoder feeds a small cross-attention UNet. The noise schedule is cosine with
zero terminal SNR and v-prediction, which keeps flat backgrounds from drifting in
colour (with a non-zero terminal SNR the sampler starts from a "mean colour" that
the model never saw at train time).
"""

from __future__ import annotations

from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from .tokenizer import MODEL_MAX_LENGTH

TEXT_WIDTH = 128
LATENT_CHANNELS = 4
LATENT_SIZE = 16

SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
    timestep_spacing="trailing",
    clip_sample=False,
)


def make_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        # Few, wide groups: GroupNorm removes each group's per-image mean and scale, and
        # with 1-2 channels per group (the SD default of 32 groups on narrow layers) the
        # absolute colour of flat regions is normalised away and comes back washed out.
        norm_num_groups=4,
        sample_size=64,
    )


def make_text_encoder(vocab_size: int, bos_id: int, eos_id: int) -> CLIPTextModel:
    cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_WIDTH,
        intermediate_size=4 * TEXT_WIDTH,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=MODEL_MAX_LENGTH,
        projection_dim=TEXT_WIDTH,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    return CLIPTextModel(cfg)


# (down, up) block types. The shipped UNet has cross-attention at 8x8, 4x4 and the middle only: text decides
# global attributes, and skipping attention at 16x16 makes a step ~40% cheaper. With full-resolution attention the
# 16x16 blocks read the text too, as in Stable Diffusion: a test of whether the patterns, which the base model
# confuses most (checkered drawn as striped, striped as solid), are decided there.
BLOCKS = {False: (("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")),
          True: (("CrossAttnDownBlock2D",) * 3, ("CrossAttnUpBlock2D",) * 3)}


def make_unet(full_resolution_attention: bool = False) -> UNet2DConditionModel:
    down_block_types, up_block_types = BLOCKS[full_resolution_attention]
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=down_block_types,
        up_block_types=up_block_types,
        block_out_channels=(64, 128, 160),
        layers_per_block=1,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=4,
        norm_num_groups=8,  # 8+ channels per group, for the same reason as the VAE
    )


def with_full_resolution_attention(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """`unet` with cross-attention added to its full-resolution blocks (the first down, the last up): every weight
    it had kept, and the new attentions' output projections zero, so that it computes exactly what `unet` did until
    training moves them."""
    config = unet.config
    grown = UNet2DConditionModel.from_config({
        **config, "down_block_types": ("CrossAttnDownBlock2D", *config.down_block_types[1:]),
        "up_block_types": (*config.up_block_types[:-1], "CrossAttnUpBlock2D")})
    try:
        missing, unexpected = grown.load_state_dict(unet.state_dict(), strict=False)
    except RuntimeError as error:  # a weight of another shape
        raise ValueError(f"its weights do not fit its config: {str(error).splitlines()[1].strip()}") from None
    new_blocks = {"down_blocks.0": grown.down_blocks[0], f"up_blocks.{len(grown.up_blocks) - 1}": grown.up_blocks[-1]}
    new_keys = {f"{prefix}.{key}" for prefix, block in new_blocks.items() for key in block.state_dict()
                if key.startswith("attentions.")}
    if unexpected or set(missing) != new_keys:
        raise ValueError("its weights do not fit the grown UNet "
                         f"({sorted(unexpected)[:3]}, {sorted(set(missing) ^ new_keys)[:3]})")
    for block in new_blocks.values():
        for attention in block.attentions:
            nn.init.zeros_(attention.proj_out.weight)
            nn.init.zeros_(attention.proj_out.bias)
    return grown.to(unet.dtype)


def make_train_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**SCHEDULE)


def make_sample_scheduler() -> DDIMScheduler:
    # set_alpha_to_one: with trailing spacing the last DDIM step lands on a clean image.
    # steps_offset=1 only silences a pipeline deprecation warning (unused by trailing spacing).
    return DDIMScheduler(**SCHEDULE, set_alpha_to_one=True, steps_offset=1)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
