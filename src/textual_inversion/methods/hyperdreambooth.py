"""HyperDreamBooth: predict LiDB weights from one image, then a short rank-relaxed LoRA fine-tune.

The hypernetwork's prediction is a rank-1 ΔW per attention projection. It becomes the first
component of a rank-r peft LoRA (its two factors, scaled evenly); the other r-1 components start as LoRA's
do (A random, B zero), so the fine-tune starts exactly at the prediction and may leave rank 1
("rank relaxation", paper §3.4). The result is written as the `lora` method writes it. The hypernetwork
itself is in `hypernetwork.py`; its offline build in `builds/hypernetwork/`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ..errors import UserError
from ..options import option
from .lora import LoRA, LoRAOptions

logger = logging.getLogger(__name__)


@dataclass
class HyperDreamBoothOptions(LoRAOptions):
    hypernetwork: str | None = option(None, "folder of a trained hypernetwork (default: the one bundled for miniworld)")


class HyperDreamBooth(LoRA):
    """A LoRA run that starts from the hypernetwork's prediction instead of zero."""

    name = "hyperdreambooth"
    summary = "a hypernetwork's prediction from one image, then a short LoRA fine-tune"
    options_class = HyperDreamBoothOptions
    # The paper's fast fine-tune; its rate was tuned on miniworld (benchmarks/results/hyperdreambooth_tune.md).
    default_lr = 3e-3
    default_steps = 40
    # Not LoRA's: the hypernetwork predicts the attention's adapters, and its fine-tune was tuned at the usual values.
    miniworld_defaults = {}
    one_image = True
    prior_preservation = False

    def prepare(self, pipe, data) -> None:
        import torch

        from .hypernetwork import predicted_factors

        started = time.monotonic()
        factors, network = predicted_factors(pipe, data.images, self.options.hypernetwork)
        if self.config.token != network.config.token:
            raise UserError(f"--token {self.config.token}: this hypernetwork predicts weights for the word "
                            f"{network.config.token!r}; pass --token {network.config.token}")
        super().prepare(pipe, data)
        scaling = self.alpha() / self.options.rank  # peft multiplies B·A by this
        modules = dict(pipe.unet.named_modules())
        with torch.no_grad():
            for name, (lora_a, lora_b) in factors.items():
                lora_b = lora_b / scaling
                layer = modules[name]
                layer.lora_A["default"].weight[0] = lora_a[0].to(layer.lora_A["default"].weight.dtype)
                layer.lora_B["default"].weight[:, 0] = lora_b[:, 0].to(layer.lora_B["default"].weight.dtype)
        self.prediction_seconds = time.monotonic() - started
        logger.info("hypernetwork prediction for %d layers in %.2f s", len(factors), self.prediction_seconds)
