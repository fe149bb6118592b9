"""`--stop-when-learned`: end a miniworld run once its images show what the training pictures share.

A fixed step count ends some seeds before the concept lands and others after it, in a dip. miniworld's
judge can tell instead: it reads the attributes every training picture shows (their shape and colour for
an object, their pattern for a style), and every few steps the run draws a few images of the token with
the current embedding and stops once enough of them show all of those attributes. It only works where the
judge can read the images, so only on miniworld.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from .errors import UserError
from .generation import using_sampler

CHECK_IMAGES = 8  # images drawn per check: the plain requests for the token, in turn
# benchmarks/results/evaluation_sampler.md: the judge gives 96 % of images the same hit or miss as under the
# evaluation's DDIM at 25 steps, in 0.45x its time; it found the teal circle in fewer of them (0.56 against
# 0.75), so if anything a check passes late.
CHECK_SCHEDULER = "dpm++"
CHECK_STEPS = 10
CHECK_GUIDANCE = 4.0  # the judge's evaluation's guidance
CHECK_SEEDS = 1_000_000  # the first image's seed, plus the run's --seed


@dataclass
class LearnedCheck:
    """What a run's images must show, and how it draws them."""

    prompts: list[str]  # [CHECK_IMAGES] each image's prompt
    shared: dict[str, str]  # attribute -> the value the judge reads on every training picture
    seed: int  # the same noise at every check, so checks differ only by the embedding
    judge: object  # miniworld.judge.JudgeNet, loaded once per run
    steps: int = CHECK_STEPS  # the sampler's steps per image
    scheduler: str | None = CHECK_SCHEDULER  # a generation.SCHEDULERS name; None: the pipeline's own


def learned_check(pictures: list[Image.Image], token: str, property_kind: str, seed: int) -> LearnedCheck:
    """The check for a run on `pictures` of an object or a style, learned as `token`.

    The images come from plain requests for the token ("a <token>", "a photo of a <token>"): with the
    training captions among them, checks passed on runs whose token showed the concept beside the
    captions' words but not alone (benchmarks/results/stop_rule.md).
    """
    from .miniworld.concepts import OBJECT_FIDELITY, STYLE_FIDELITY
    from .miniworld.judge import load_judge, predict

    judge = load_judge()
    readings = predict(pictures, judge)
    shared = {name: value for name, value in readings[0].items() if all(r[name] == value for r in readings)}
    if not shared:
        raise UserError(f"--stop-when-learned: miniworld's judge finds no shape, colour, pattern, background or "
                        f"size that all {len(pictures)} pictures share, so it cannot tell when they are learned; "
                        "leave the option out and set --steps")
    requests = [template.replace("{c}", token) for template in (STYLE_FIDELITY if property_kind == "style"
                                                               else OBJECT_FIDELITY)]
    prompts = [requests[i % len(requests)] for i in range(CHECK_IMAGES)]
    # Its own seeds, far from the evaluation's (0 up), so a run's stop and its score see different noise.
    return LearnedCheck(prompts, shared, CHECK_SEEDS + seed, judge)


def should_stop(shares: list[float], share: float, passes: int) -> bool:
    """Whether the checks so far (`shares`, oldest first) say stop: the last `passes` of them reach `share`."""
    return len(shares) >= passes and all(s >= share for s in shares[-passes:])


@torch.no_grad()
def learned_share(pipe, check: LearnedCheck) -> float:
    """The fraction of `check.prompts`' images, drawn with `pipe` as it is now, that show all of `check.shared`."""
    from .miniworld.judge import predict

    generators = [torch.Generator().manual_seed(check.seed + i) for i in range(len(check.prompts))]
    with using_sampler(pipe, check.scheduler):
        images = pipe(check.prompts, num_inference_steps=check.steps, guidance_scale=CHECK_GUIDANCE,
                      generator=generators).images
    readings = predict(images, check.judge)
    return sum(all(r[k] == v for k, v in check.shared.items()) for r in readings) / len(readings)
