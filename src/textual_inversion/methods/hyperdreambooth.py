"""HyperDreamBooth: predict LiDB weights from one image, then a short rank-relaxed LoRA fine-tune.

The hypernetwork's prediction is a rank-1 ΔW per attention projection. It becomes the first
component of a rank-r peft LoRA (its two factors, scaled evenly); the other r-1 components start as LoRA's
do (A random, B zero), so the fine-tune starts exactly at the prediction and may leave rank 1
("rank relaxation", paper §3.4). The result is written as the `lora` method writes it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from ..data import list_images, load_rgb
from ..errors import UserError
from ..hyper.lidb import lora_factors
from ..hyper.lidb_file import write_rank1_lora
from ..hyper.network import check_fits, load_hypernetwork
from .lora import LoRA

logger = logging.getLogger(__name__)


def predicted_factors(pipe, images, hypernetwork_folder: str | None) -> tuple[dict[str, tuple], object]:
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


class HyperDreamBooth(LoRA):
    """A LoRA run that starts from the hypernetwork's prediction instead of zero."""

    name = "hyperdreambooth"

    def prepare(self, pipe) -> None:
        started = time.monotonic()
        images = [load_rgb(path) for path in list_images(self.config.images)]
        factors, network = predicted_factors(pipe, images, self.config.hypernetwork)
        if self.config.token != network.config.token:
            raise UserError(f"--token {self.config.token}: this hypernetwork predicts weights for the word "
                            f"{network.config.token!r}; pass --token {network.config.token}")
        super().prepare(pipe)
        scaling = (self.config.lora_alpha or self.config.rank) / self.config.rank  # peft multiplies B·A by this
        modules = dict(pipe.unet.named_modules())
        with torch.no_grad():
            for name, (lora_a, lora_b) in factors.items():
                lora_b = lora_b / scaling
                layer = modules[name]
                layer.lora_A["default"].weight[0] = lora_a[0].to(layer.lora_A["default"].weight.dtype)
                layer.lora_B["default"].weight[:, 0] = lora_b[:, 0].to(layer.lora_B["default"].weight.dtype)
        self.prediction_seconds = time.monotonic() - started
        logger.info("hypernetwork prediction for %d layers in %.2f s", len(factors), self.prediction_seconds)
