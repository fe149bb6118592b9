"""Aspect-ratio buckets: picture sizes of about one pixel budget, so that a photo trains at its own shape.

As kohya's and OneTrainer's trainers do it: for a training resolution R the buckets are the sizes
(width, height) in steps the model accepts whose area is at most R x R, from 2:1 landscape to 1:2 portrait;
each picture goes to the bucket whose aspect ratio is nearest to its own, is scaled to cover it, and
only the overhang is cut. A square picture lands in the R x R bucket, exactly what a square crop gives.
"""

from __future__ import annotations

import math

MAX_ASPECT = 2.0  # 16:9 phone photos (1.78) keep their shape; anything longer is cut to 2:1


def bucket_sizes(resolution: int, step: int, max_aspect: float = MAX_ASPECT) -> list[tuple[int, int]]:
    """Every (width, height), multiples of `step`, with width x height <= resolution² and an aspect ratio
    within 1:max_aspect .. max_aspect:1, each width with the tallest height that fits; square included."""
    budget = resolution * resolution
    sizes = set()
    for width in range(step, budget // step + 1, step):
        height = budget // width // step * step
        if height >= step and 1 / max_aspect <= width / height <= max_aspect:
            sizes.add((width, height))
    sizes.add((resolution, resolution))
    return sorted(sizes)


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest to width:height (on a log scale: 2:1 and 1:2 are as far from 1:1)."""
    aspect = math.log(width / height)
    return min(buckets, key=lambda size: (abs(math.log(size[0] / size[1]) - aspect), -size[0] * size[1]))


def size_step(pipe) -> int:
    """The pixel multiple the pipeline's denoiser takes: the VAE's downscale times the UNet's own downsamplings,
    or times 2 for the transformers, which read the latents in 2x2 patches (Flux, SD3, Z-Image)."""
    if not hasattr(pipe, "unet"):
        return pipe.vae_scale_factor * 2
    return pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1)


def picture_sizes(images, resolution: int, step: int, bucket: bool) -> list[tuple[int, int]]:
    """The (width, height) each picture trains at: its nearest bucket, or the resolution² square."""
    if not bucket:
        return [(resolution, resolution)] * len(images)
    buckets = bucket_sizes(resolution, step)
    return [nearest_bucket(image.width, image.height, buckets) for image in images]
