"""PIL images as the tensors the models take."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """Images of one size (H, W) -> a float32 batch (B, 3, H, W) in [-1, 1]: pixel value v becomes v / 127.5 - 1.

    Images in another mode are converted to RGB first. The batch is contiguous (NCHW in memory).
    """
    array = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) for image in images]) / 127.5 - 1.0
    # Contiguous: a permuted view is channels-last in memory, and conv layers keep that layout.
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
