"""benchmarks/pick_feature_layers.py: a pick.png cut back into its pictures, and Gram matrices of more layers."""

import torch
from benchmarks.pick_feature_layers import encoder_grams, grid_rows
from PIL import Image

from textual_inversion.generation import save_grid
from textual_inversion.images import to_tensor
from textual_inversion.likeness import gram_matrices
from textual_inversion.tiny import vae as tiny_vae


def test_grid_rows_gives_back_the_pictures_save_grid_tiled(tmp_path):
    pictures = [Image.new("RGB", (8, 8), (40 * index, 255 - 40 * index, 7)) for index in range(6)]
    rows = grid_rows(save_grid(pictures, tmp_path / "pick.png", columns=3), columns=3)
    assert [[p.getpixel((4, 4)) for p in row] for row in rows] == [[p.getpixel((0, 0)) for p in pictures[:3]],
                                                                   [p.getpixel((0, 0)) for p in pictures[3:]]]
    assert all(p.size == (8, 8) for row in rows for p in row)


def test_encoder_grams_holds_the_picks_layer_and_each_down_blocks():
    torch.manual_seed(0)
    vae = tiny_vae().eval()
    pixels = to_tensor([Image.effect_noise((32, 32), 60).convert("RGB") for _ in range(2)])
    with torch.no_grad():
        grams, picks = encoder_grams(vae, pixels), gram_matrices(vae, pixels)
    channels = vae.config.block_out_channels
    assert [g.shape[-1] for g in grams] == [channels[0], *channels]  # conv_in, then each down block
    assert torch.allclose(grams[0], picks[0]) and len(picks) == 1
