"""round_trip encodes pictures once and decodes them as the encoder gave them and after decoder inversion."""

import random

import numpy as np
import torch
from benchmarks.vae_patterns import round_trip


def error(images, targets) -> float:
    return float(np.mean([(np.asarray(a, float) - np.asarray(b, float)) ** 2 for a, b in zip(images, targets, strict=True)]))


def test_round_trip_decodes_the_encoders_means_and_the_refined_ones():
    from diffusers import AutoencoderKL

    from textual_inversion.miniworld import model_path
    from textual_inversion.miniworld.world import random_scene, render

    torch.manual_seed(0)
    vae = AutoencoderKL.from_pretrained(str(model_path()), subfolder="vae", torch_dtype=torch.float32).eval()
    rng = random.Random(0)
    rendered = [render(random_scene(rng)) for _ in range(2)]
    plain, refined = round_trip(vae, rendered, (0, 20))
    assert [im.size for im in plain + refined] == [rendered[0].size] * 4
    assert [np.asarray(im).tolist() for im in round_trip(vae, rendered)[0]] == [np.asarray(im).tolist() for im in plain]
    assert error(refined, rendered) < error(plain, rendered)  # refining moves the decoding towards the pictures
