"""`--stop-when-learned`: end a miniworld run once its images show what the training pictures share.

A fixed step count ends some seeds before the concept lands and others after it, in a dip. miniworld's
judge can tell instead: it reads the attributes every training picture shows (their shape and colour for
an object, their pattern for a style), and every few steps the run draws one image per caption with the
current embedding and stops once enough of them show all of those attributes. It only works where the
judge can read the images, so only on miniworld.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from .errors import UserError
from .generation import using_sampler

CHECK_IMAGES = 8  # images drawn per check, one per caption in turn
# benchmarks/results/evaluation_sampler.md: the judge gives 96 % of images the same hit or miss as under the
# evaluation's DDIM at 25 steps, in 0.35x its time; it found the teal circle in fewer of them (0.56 against
# 0.75), so if anything a check passes late.
CHECK_SAMPLER = ("dpm++", 10)
CHECK_GUIDANCE = 4.0  # the judge's evaluation's guidance


@dataclass
class LearnedCheck:
    """What a run's images must show, and how it draws them."""

    prompts: list[str]  # [CHECK_IMAGES] the training captions, each image's own
    shared: dict[str, str]  # attribute -> the value the judge reads on every training picture
    share: float  # the fraction of images that must show all of `shared`
    seed: int  # the same noise at every check, so checks differ only by the embedding
    judge: object  # miniworld.judge.JudgeNet, loaded once per run


def learned_check(pictures: list[Image.Image], captions: list[list[str]], share: float, seed: int) -> LearnedCheck:
    """The check for a run on `pictures` (their captions per picture, the token filled in)."""
    from .miniworld.judge import load_judge, predict

    judge = load_judge()
    readings = predict(pictures, judge)
    shared = {name: value for name, value in readings[0].items() if all(r[name] == value for r in readings)}
    if not shared:
        raise UserError(f"--stop-when-learned: miniworld's judge finds no shape, colour, pattern, background or "
                        f"size that all {len(pictures)} pictures share, so it cannot tell when they are learned; "
                        "leave the option out and set --steps")
    prompts = [captions[i % len(captions)][(i // len(captions)) % len(captions[i % len(captions)])]
               for i in range(CHECK_IMAGES)]
    return LearnedCheck(prompts, shared, share, seed, judge)


@torch.no_grad()
def learned_share(pipe, check: LearnedCheck) -> float:
    """The fraction of `check.prompts`' images, drawn with `pipe` as it is now, that show all of `check.shared`."""
    from .miniworld.judge import predict

    name, steps = CHECK_SAMPLER
    generators = [torch.Generator().manual_seed(check.seed + i) for i in range(len(check.prompts))]
    with using_sampler(pipe, name):
        images = pipe(check.prompts, num_inference_steps=steps, guidance_scale=CHECK_GUIDANCE,
                      generator=generators).images
    readings = predict(images, check.judge)
    return sum(all(r[k] == v for k, v in check.shared.items()) for r in readings) / len(readings)

