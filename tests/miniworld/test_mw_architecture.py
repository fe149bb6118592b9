"""miniworld's UNet grown with cross-attention at 16x16 starts as the same function, then learns."""

import pytest
import torch

from textual_inversion.miniworld.architecture import (
    LATENT_CHANNELS,
    LATENT_SIZE,
    TEXT_WIDTH,
    make_unet,
    with_full_resolution_attention,
)


def test_grown_unet_computes_what_the_original_did():
    torch.manual_seed(0)
    unet = make_unet().eval()
    grown = with_full_resolution_attention(unet).eval()
    assert grown.config.down_block_types[0] == "CrossAttnDownBlock2D"
    assert grown.config.up_block_types[-1] == "CrossAttnUpBlock2D"
    assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in unet.parameters())
    latents = torch.randn(2, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE)
    text = torch.randn(2, 77, TEXT_WIDTH)
    with torch.no_grad():
        before = unet(latents, torch.tensor([10, 900]), text).sample
        after = grown(latents, torch.tensor([10, 900]), text).sample
    torch.testing.assert_close(after, before)


def test_grown_attention_learns():
    """Zero output projections still get a gradient (the attention's output flows through them)."""
    grown = with_full_resolution_attention(make_unet())
    latents = torch.randn(1, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE)
    grown(latents, torch.tensor([500]), torch.randn(1, 77, TEXT_WIDTH)).sample.square().mean().backward()
    assert grown.down_blocks[0].attentions[0].proj_out.weight.grad.abs().sum() > 0


def test_a_unet_whose_weights_do_not_fit_its_config_is_refused():
    unet = make_unet()
    unet.register_to_config(block_out_channels=(32, 64, 96))
    with pytest.raises(ValueError, match="its weights do not fit its config: size mismatch for conv_in.weight"):
        with_full_resolution_attention(unet)
