"""The hypernetwork's output fits every target layer; its prediction survives save and load."""

import torch
from PIL import Image

from textual_inversion.methods.hypernetwork import (
    HyperConfig,
    HyperNetwork,
    image_tensor,
    load_hypernetwork,
    save_hypernetwork,
)
from textual_inversion.methods.lidb_layers import target_layers
from textual_inversion.models import load_pipeline


def tiny_hypernetwork(unet, token="<blob>", iterations=3) -> HyperNetwork:
    shapes = target_layers(unet, 100, 50)
    config = HyperConfig(layers=[vars(s) for s in shapes], seed=0, down_dim=100, up_dim=50, token=token, width=32,
                         heads=2, decoder_layers=1, iterations=iterations)
    torch.manual_seed(0)
    network = HyperNetwork(config)
    torch.nn.init.normal_(network.write_weights.weight, std=0.1)  # an untrained net predicts the mean: move off it
    return network


def test_output_shapes_fit_every_target_layer_and_survive_save_and_load(tiny_sd1_path, tmp_path):
    unet = load_pipeline(tiny_sd1_path).unet
    network = tiny_hypernetwork(unet, iterations=3)
    images = [Image.new("RGB", (48, 40), (200, 30, 30)), Image.new("RGB", (64, 64), (20, 30, 200))]
    estimates = network(image_tensor(images))
    assert len(estimates) == 3  # one per refinement iteration
    assert estimates[-1].shape == (2, len(network.config.layers), network.max_down + network.max_up)
    modules = dict(unet.named_modules())
    predicted = network.predict(images[:1])
    for shape, (down, up) in zip(network.config.shapes(), predicted, strict=True):
        layer = modules[shape.name]
        assert down.shape == (min(100, layer.in_features),) and up.shape == (min(50, layer.out_features),)
    assert torch.count_nonzero(estimates[-1] * (1 - network.mask)) == 0  # padding stays zero
    save_hypernetwork(network, tmp_path / "hyper")
    again = load_hypernetwork(tmp_path / "hyper").predict(images[:1])
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(predicted, again, strict=True))
