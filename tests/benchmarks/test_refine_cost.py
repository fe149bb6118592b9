"""refine_cost times the encoder and a refine step through the real-size VAE built from its config."""

import torch
from benchmarks.refine_cost import measure


def test_measure_times_an_encoder_pass_and_a_refine_step_on_the_real_vae():
    row = measure("sd15", resolution=16, steps=1, device=torch.device("cpu"))  # 16 px: the real VAE, a tiny picture
    assert row["model"] == "sd15" and row["resolution"] == 16
    assert row["encode"] > 0 and row["refine_step"] > 0
    assert row["peak"] is None or row["peak"] > 0
