"""How well does the packaged miniworld model follow its prompts? Scored by the judge.

    python -m benchmarks.miniworld_quality [--prompts 144] [--per-prompt 2] [--steps 25] [--guidance 4]

A fixed, seeded prompt set spans every named colour, base shape, background and
size (half the prompts also name a pattern). Each prompt is sampled with plain
diffusers at 25 steps; the judge's per-attribute match rates are printed and
written to ``benchmarks/results/miniworld_quality.md`` (+ a sample grid PNG).
"""

from __future__ import annotations

import itertools
import platform
import random
import time
from datetime import UTC, datetime

import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from textual_inversion.miniworld import model_path
from textual_inversion.miniworld.judge import load_judge, match_rates, predict
from textual_inversion.miniworld.world import BACKGROUNDS, BASE_SHAPES, NAMED_COLOURS, PATTERNS, SIZES

from .common import RESULTS_DIR, argument_parser, command

TARGETS = {"colour": 0.90, "shape": 0.80, "background": 0.90, "size": 0.85}


def prompt_set(n: int, seed: int = 0) -> list[tuple[str, dict[str, str]]]:
    """``n`` (prompt, expected attributes) pairs, drawn without replacement from all combinations."""
    rng = random.Random(seed)
    combos = list(itertools.product(BASE_SHAPES, NAMED_COLOURS, BACKGROUNDS, SIZES))
    out = []
    for i, (shape, colour, bg, size) in enumerate(rng.sample(combos, n)):
        expected = {"shape": shape, "colour": colour, "background": bg, "size": size}
        if i % 2:  # every other prompt also names a pattern
            pattern = PATTERNS[(i // 2) % len(PATTERNS)]
            expected["pattern"] = pattern
            words = f"{size} {colour} {pattern} {shape}"
        else:
            words = f"{size} {colour} {shape}"
        article = "an" if words[0] in "aeiou" else "a"
        out.append((f"{article} {words} on a {bg} background", expected))
    return out


def grid(images: list[Image.Image], cols: int = 16) -> Image.Image:
    rows = (len(images) + cols - 1) // cols
    g = Image.new("RGB", (64 * cols, 64 * rows))
    for i, im in enumerate(images):
        g.paste(im, ((i % cols) * 64, (i // cols) * 64))
    return g


# The table's rows: measure()'s keys and how they read.
ROWS = {"colour": "colour", "shape": "shape", "background": "background", "size": "size",
        "pattern": "pattern (prompts naming a pattern)",
        "every": "every named attribute at once (all prompts)",
        "every_patterned": "every named attribute at once (prompts naming a pattern: 5 attributes)"}


def measure(pipe, judge, prompts: list[tuple[str, dict[str, str]]], per_prompt: int, steps: int, guidance: float,
            seed: int) -> tuple[list[Image.Image], dict[str, float], float]:
    """Sample every prompt `per_prompt` times and let `judge` read them: (images, match rate per ROWS key,
    seconds of generation)."""
    images, expected = [], []
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for i in range(0, len(prompts), 16):
        chunk = prompts[i : i + 16]
        out = pipe([t for t, _ in chunk], num_inference_steps=steps, guidance_scale=guidance,
                   num_images_per_prompt=per_prompt, generator=gen)
        images += out.images
        expected += [e for _, e in chunk for _ in range(per_prompt)]
    seconds = time.time() - t0
    predictions = predict(images, judge)
    rates = match_rates(predictions, expected)
    # A composite subject is all of its attributes at once; an image counts only if the judge reads every one.
    every = [all(p[k] == v for k, v in e.items()) for p, e in zip(predictions, expected, strict=True)]
    patterned = [hit for hit, e in zip(every, expected, strict=True) if "pattern" in e]
    rates = {**rates, "every": sum(every) / len(every), "every_patterned": sum(patterned) / max(len(patterned), 1)}
    return images, rates, seconds


def main(argv=None) -> None:
    p = argument_parser(__doc__)
    p.add_argument("--prompts", type=int, default=144)
    p.add_argument("--per-prompt", type=int, default=2)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--model", help="another miniworld pipeline folder (e.g. a build's --output), printed only")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    pipe = StableDiffusionPipeline.from_pretrained(args.model or model_path())
    pipe.set_progress_bar_config(disable=True)
    images, rates, seconds = measure(pipe, load_judge(), prompt_set(args.prompts, args.seed), args.per_prompt,
                                     args.steps, args.guidance, args.seed)

    lines = [
        "# miniworld quality",
        "",
        f"{args.prompts} prompts x {args.per_prompt} images, {args.steps} DDIM steps, guidance {args.guidance}, "
        f"seed {args.seed}; generation took {seconds:.0f} s on {platform.machine()} CPU "
        f"({torch.get_num_threads()} threads). Scored by the miniworld judge. "
        + (f"Model: {args.model}. " if args.model else "") +
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "| attribute | match rate | target |",
        "|---|---|---|",
    ]
    for k, label in ROWS.items():
        target = f"{100 * TARGETS[k]:.0f} %" if k in TARGETS else "-"
        lines.append(f"| {label} | {100 * rates[k]:.1f} % | {target} |")
    lines += ["", f"Command: `{command()}`"]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write and not args.model:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / "miniworld_quality.md").write_text(text)
        grid(images[: 16 * 8]).save(RESULTS_DIR / "miniworld_quality.png")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
