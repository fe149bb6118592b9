"""The HyperDreamBooth hypernetwork: an image encoder and a transformer decoder that refines LiDB weights.

The encoder (a small CNN, enough for miniworld's 64x64 renders) turns the image into a grid of feature
tokens. The decoder holds one query token per target layer; each of `iterations` passes reads the
current weight estimate (starting at the training set's mean), attends to the image tokens, and adds
a correction (HyperDreamBooth §3.3, "iterative prediction"). Weights live in normalised units: per
coordinate, (w - mean) / std over the pre-optimised training set.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import atomic_path
from ..errors import UserError
from ..images import to_tensor
from ..miniworld import HYPERNETWORK_DIR
from .lidb_file import write_rank1_lora
from .lidb_layers import LayerShape, lora_factors

IMAGE_SIZE = 64
WEIGHTS_FILE = "hypernetwork.safetensors"
CONFIG_FILE = "hypernetwork.json"


@dataclass
class HyperConfig:
    """What a hypernetwork predicts for (layers, dims, aux seed, trigger token) and its size."""

    layers: list[dict]  # LayerShape fields, in prediction order
    seed: int  # the aux matrices' seed the training set was fitted with
    down_dim: int
    up_dim: int
    token: str  # the word the LiDB weights were fitted for
    width: int = 128
    heads: int = 4
    decoder_layers: int = 2
    iterations: int = 4

    def shapes(self) -> list[LayerShape]:
        return [LayerShape(**layer) for layer in self.layers]


def image_tensor(images: list[Image.Image]) -> torch.Tensor:
    """Images of any size as the hypernetwork's input: a (B, 3, 64, 64) batch in [-1, 1]."""
    return to_tensor([image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
                      for image in images])


class HyperNetwork(nn.Module):
    """image (B, 3, 64, 64) -> LiDB weights (B, layers, max_down + max_up), one estimate per iteration."""

    def __init__(self, config: HyperConfig):
        super().__init__()
        self.config = config
        shapes = config.shapes()
        width = config.width
        self.max_down = max(s.down_dim for s in shapes)
        self.max_up = max(s.up_dim for s in shapes)
        size = self.max_down + self.max_up
        self.encoder = nn.Sequential(  # 64 -> 32 -> 16 -> 8: 64 image tokens
            nn.Conv2d(3, 32, 4, 2, 1), nn.GELU(), nn.Conv2d(32, 64, 4, 2, 1), nn.GELU(),
            nn.Conv2d(64, width, 4, 2, 1), nn.GELU(), nn.Conv2d(width, width, 3, 1, 1))
        self.image_position = nn.Parameter(torch.randn(64, width) * 0.02)
        self.layer_embedding = nn.Parameter(torch.randn(len(shapes), width) * 0.02)
        self.read_weights = nn.Linear(size, width)
        block = nn.TransformerDecoderLayer(width, config.heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(block, config.decoder_layers)
        self.write_weights = nn.Linear(width, size)
        nn.init.zeros_(self.write_weights.weight)  # the first estimate is the mean; corrections grow from there
        nn.init.zeros_(self.write_weights.bias)
        mask = torch.zeros(len(shapes), size)
        for index, shape in enumerate(shapes):
            mask[index, :shape.down_dim] = 1
            mask[index, self.max_down:self.max_down + shape.up_dim] = 1
        self.register_buffer("mask", mask)
        self.register_buffer("mean", torch.zeros(len(shapes), size))
        self.register_buffer("std", torch.ones(len(shapes), size))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Normalised weight estimates after each iteration (the last is the prediction)."""
        features = self.encoder(images).flatten(2).transpose(1, 2) + self.image_position
        weights = torch.zeros(len(images), *self.mask.shape, device=images.device)
        estimates = []
        for _ in range(self.config.iterations):
            queries = self.layer_embedding + self.read_weights(weights)
            weights = (weights + self.write_weights(self.decoder(queries, features))) * self.mask
            estimates.append(weights)
        return estimates

    def normalise(self, flat: torch.Tensor) -> torch.Tensor:
        return (flat - self.mean) / self.std * self.mask

    def denormalise(self, normalised: torch.Tensor) -> torch.Tensor:
        return (normalised * self.std + self.mean) * self.mask

    def split(self, flat: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(B, layers, size) real-unit weights -> per layer (down (B, d), up (B, u))."""
        return [(flat[:, i, :s.down_dim], flat[:, i, self.max_down:self.max_down + s.up_dim])
                for i, s in enumerate(self.config.shapes())]

    @torch.no_grad()
    def predict(self, images: list[Image.Image]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (down_train, up_train) for one subject: the mean prediction over its images."""
        self.eval()
        device = self.mask.device
        flat = self.denormalise(self(image_tensor(images).to(device))[-1]).mean(0, keepdim=True)
        return [(down[0], up[0]) for down, up in self.split(flat)]


def save_hypernetwork(network: HyperNetwork, folder: Path) -> None:
    """Write `network` as load_hypernetwork reads it: weights and config, each atomically."""
    folder = Path(folder)
    with atomic_path(folder / WEIGHTS_FILE) as temporary:
        save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(temporary))
    with atomic_path(folder / CONFIG_FILE) as temporary:
        temporary.write_text(json.dumps(asdict(network.config), indent=1), encoding="utf-8")


def load_hypernetwork(folder: str | Path | None = None) -> HyperNetwork:
    """A trained hypernetwork from `folder` (default: the one bundled for miniworld)."""
    folder = Path(folder) if folder else HYPERNETWORK_DIR
    if not (folder / WEIGHTS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        raise UserError(f"--hypernetwork {folder}: holds no {WEIGHTS_FILE} and {CONFIG_FILE}; train one with "
                        "`python -m textual_inversion.builds.hypernetwork.train`")
    network = HyperNetwork(HyperConfig(**json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))))
    network.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return network


def check_fits(network: HyperNetwork, unet) -> None:
    """Refuse a hypernetwork trained for another UNet, naming the first layer that differs."""
    modules = dict(unet.named_modules())
    for shape in network.config.shapes():
        module = modules.get(shape.name)
        if module is None or (module.in_features, module.out_features) != (shape.in_features, shape.out_features):
            raise UserError(f"--hypernetwork: layer {shape.name} ({shape.in_features}->{shape.out_features}) is not "
                            "in this model; use a hypernetwork trained for this --model")


def predicted_factors(pipe, images, hypernetwork_folder: str | None) -> tuple[dict[str, tuple], HyperNetwork]:
    """{layer name: (lora_A 1 x in, lora_B out x 1)} of the ΔW the hypernetwork predicts from `images` (PIL),
    and the hypernetwork. ΔW = lora_B @ lora_A = (up_aux · up)(down · down_aux), never built whole."""
    network = load_hypernetwork(hypernetwork_folder)
    check_fits(network, pipe.unet)
    shapes = network.config.shapes()
    predicted = dict(zip((shape.name for shape in shapes), network.predict(images), strict=True))
    return lora_factors(shapes, predicted, network.config.seed), network


def write_prediction(pipe, images, hypernetwork_folder: str | None, output_dir: Path) -> Path:
    """The hypernetwork's prediction alone, as a rank-1 LoRA file (no fine-tune)."""
    factors, _ = predicted_factors(pipe, images, hypernetwork_folder)
    return write_rank1_lora(output_dir, type(pipe), factors)
