"""A small CNN that reads a miniworld image's attributes, for scoring generations.

    python -m textual_inversion.miniworld.judge --train [--steps N] [--threads N] [--start FOLDER --learn shape [--distil]]

The shipped judge is the one of 2026-12-05 taught "blob" in two rounds (judge/config.json has the last): its shape
head alone (--start that judge --learn shape, 1500 steps), then every weight (--start the first round --learn shape
--distil, 1500 steps), its colour, background, size and pattern heads held to the first round's readings, which
are those of 2026-12-05. Chosen by benchmarks/judge_compare.py on the hand-read samples (docs/subjects.md).

Heads: shape (star included, and "blob" for no shape of the world), colour (hidden colour
included), background, size, pattern. Trained on fresh renders with mild blur/noise so that
it also reads the slightly soft images a diffusion model produces. Weights ship in ``judge/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter
from torch import nn

from ..images import to_tensor
from .world import ATTRIBUTES, IMAGE_SIZE, SHAPES, SUPERSAMPLE, VOCAB, random_scene, render

log = logging.getLogger(__name__)

JUDGE_DIR = Path(__file__).resolve().parent / "judge"
WEIGHTS = "judge.safetensors"
CONFIG = "config.json"
WIDTHS = (32, 64, 96, 128)

# The judge's own shape value for a picture that shows no shape of the world: a dot far below "small", a
# smudge (a small shape blurred past its corners) or a lumpy blob. Without it the judge names the nearest
# shape it knows: the red and blue stars' LoRA runs draw 12-14 px smudges on grey, which it read as stars
# (2026-12-06; by eye 1-4 of 16 fidelity pictures per run were stars, the judge read 13-15).
NO_SHAPE = "blob"
JUDGE_VOCAB: dict[str, tuple[str, ...]] = {**VOCAB, "shape": (*SHAPES, NO_SHAPE)}
# Radii in output pixels. "small" starts at 9 (world.SIZE_RADIUS) and no dot or smudge reaches 8, so the sizes
# between are taught neither way; a crisp circle of radius 5 is still a circle (the demo draws such). A lump is no
# shape at any size, so lumps reach the small shapes' sizes.
DOT_RADIUS = (1.5, 4.0)
CORNERED_SHAPES = tuple(shape for shape in SHAPES if shape not in ("circle", "ring"))  # a blurred circle is a circle
SMUDGE_RADIUS, SMUDGE_BLUR = (4.5, 7.5), (1.0, 2.0)
LUMP_RADIUS = (5.0, 12.0)
UNLABELLED = -100  # cross_entropy's ignore_index: a dot's size and pattern have no true value
EVALUATION_RENDERS = 2000  # fresh renders `evaluate` reads, and a quarter as many no-shape pictures


class JudgeNet(nn.Module):
    """Four conv stages (64 -> 8 px), global avg+max pooling, one linear head per attribute.

    The full-resolution stage has a single conv (it dominates the cost); later stages have two.
    """

    def __init__(self, vocab: dict[str, tuple[str, ...]] = JUDGE_VOCAB, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        layers, c_in = [], 3
        for i, c in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [nn.Conv2d(c_in, c, 3, stride, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            if i > 0:
                layers += [nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.widths = tuple(widths)
        self.vocab = {k: tuple(v) for k, v in vocab.items()}
        self.heads = nn.ModuleDict({k: nn.Linear(2 * c_in, len(v)) for k, v in self.vocab.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x)
        h = torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)
        return {k: head(h) for k, head in self.heads.items()}


def to_batch(images: list[Image.Image]) -> torch.Tensor:
    """Images of any size as the judge's input: (B, 3, 64, 64) in [-1, 1]."""
    return to_tensor([im.convert("RGB").resize((64, 64)) for im in images])


def _augment(im: Image.Image, rng: random.Random) -> Image.Image:
    # Generated images are a little soft and noisy; colours themselves are not jittered
    # because neighbouring colour names (orange/yellow, pink/red) must stay separable.
    if rng.random() < 0.5:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 1.0)))
    if rng.random() < 0.5:
        arr = np.asarray(im, dtype=np.float32)
        arr = arr + np.random.default_rng(rng.randrange(2**31)).normal(0, rng.uniform(2, 8), arr.shape)
        im = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    return im


def lump_mask(rng: random.Random, cx: float, cy: float, r: float) -> Image.Image:
    """A lumpy closed outline around (cx, cy) of mean radius ``r`` (output pixels), as a supersampled "L" mask.

    The radius wobbles with three low harmonics of random phase, and the whole is squashed along a random axis,
    so that it resembles none of the world's shapes.
    """
    harmonics = [(k, rng.uniform(0.12, 0.3), rng.uniform(0, 2 * math.pi)) for k in (2, 3, 4)]
    squash, tilt = rng.uniform(0.6, 1.0), rng.uniform(0, math.pi)
    points = []
    for i in range(48):
        a = 2 * math.pi * i / 48
        rr = r * (1 + sum(amp * math.sin(k * a + phase) for k, amp, phase in harmonics) / 1.6)
        x, y = rr * math.cos(a), squash * rr * math.sin(a)
        x, y = x * math.cos(tilt) - y * math.sin(tilt), x * math.sin(tilt) + y * math.cos(tilt)
        points.append(((cx + x) * SUPERSAMPLE, (cy + y) * SUPERSAMPLE))
    mask = Image.new("L", (IMAGE_SIZE * SUPERSAMPLE,) * 2, 0)
    ImageDraw.Draw(mask).polygon(points, fill=255)
    return mask


def no_shape_picture(rng: random.Random) -> tuple[Image.Image, dict[str, str]]:
    """A picture of no shape of the world (a dot, a smudge or a lump, a third each) and its readable attributes."""
    scene = random_scene(rng, shapes=SHAPES, hidden_colour_prob=1 / len(VOCAB["colour"]))
    kind = rng.randrange(3)
    if kind == 0:
        image = render(replace(scene, radius=rng.uniform(*DOT_RADIUS)))
    elif kind == 1:  # smudges come from the shapes with corners
        scene = replace(scene, shape=rng.choice(CORNERED_SHAPES))
        image = render(replace(scene, radius=rng.uniform(*SMUDGE_RADIUS)))
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*SMUDGE_BLUR)))
    else:
        image = render(scene, lump_mask(rng, scene.x, scene.y, rng.uniform(*LUMP_RADIUS)))
    return image, {"shape": NO_SHAPE, "colour": scene.colour, "background": scene.background}


def _sample(rng: random.Random, n: int, augment: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    # Uniform over every shape value (star, blob and the hidden colour included).
    images, attributes = [], []
    for _ in range(n):
        if rng.random() < 1 / len(JUDGE_VOCAB["shape"]):
            image, readable = no_shape_picture(rng)
        else:
            scene = random_scene(rng, shapes=SHAPES, hidden_colour_prob=1 / len(VOCAB["colour"]))
            image, readable = render(scene), scene.attributes()
        images.append(_augment(image, rng) if augment else image)
        attributes.append(readable)
    labels = {k: torch.tensor([JUDGE_VOCAB[k].index(a[k]) if k in a else UNLABELLED for a in attributes])
              for k in ATTRIBUTES}
    return to_batch(images), labels


@torch.no_grad()
def evaluate(net: JudgeNet, n: int = EVALUATION_RENDERS, seed: int = 12345) -> dict[str, float]:
    """Per-head accuracy on ``n`` fresh, un-augmented renders of the world, and how many of ``n // 4`` fresh
    no-shape pictures it reads as "blob"."""
    net.eval()
    rng = random.Random(seed)
    scenes = [random_scene(rng, shapes=SHAPES, hidden_colour_prob=1 / len(VOCAB["colour"])) for _ in range(n)]
    accuracy = match_rates(predict([render(s) for s in scenes], net), [s.attributes() for s in scenes])
    blobs = predict([no_shape_picture(rng)[0] for _ in range(n // 4)], net)
    accuracy[NO_SHAPE] = float(np.mean([p["shape"] == NO_SHAPE for p in blobs]))
    return accuracy


def extended(judge: JudgeNet) -> JudgeNet:
    """A judge over JUDGE_VOCAB with `judge`'s weights: every value `judge` knows keeps its head row, a value it
    lacks (the shape "blob", for the judge shipped until 2026-12-06) starts at zero."""
    net = JudgeNet(JUDGE_VOCAB, judge.widths)
    state = judge.state_dict()
    for attribute, values in net.vocab.items():
        for part in ("weight", "bias"):
            key = f"heads.{attribute}.{part}"
            old, rows = state.pop(key), torch.zeros_like(net.state_dict()[key])
            for row, value in enumerate(values):
                if value in judge.vocab[attribute]:
                    rows[row] = old[judge.vocab[attribute].index(value)]
            state[key] = rows
    net.load_state_dict(state)
    return net


def train(steps: int = 2500, batch: int = 64, seed: int = 0, lr: float = 2e-3, start: JudgeNet | None = None,
          learn: tuple[str, ...] = ATTRIBUTES, distil: bool = False) -> tuple[JudgeNet, dict[str, float]]:
    """A judge trained from scratch, or from `start` (extended to JUDGE_VOCAB) with only the heads in `learn`
    learning: the others, and the shared features, then read every picture as `start` does.

    With `distil`, the shared features learn too, and every head not in `learn` is held to `start`'s readings of
    the same pictures (its softmax matched to `start`'s, the KL divergence as its loss), so that a new value can
    reshape the features while the other heads keep reading as before, near enough to be checked.
    """
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = random.Random(seed)
    net = JudgeNet() if start is None else extended(start)
    whole = start is None or set(learn) == set(ATTRIBUTES) or distil
    held = [k for k in ATTRIBUTES if k not in learn] if start is not None and distil else []
    teacher = extended(start).eval() if held else None
    for name, parameter in net.named_parameters():
        parameter.requires_grad_(whole or any(name.startswith(f"heads.{k}.") for k in learn))
    learning = [parameter for parameter in net.parameters() if parameter.requires_grad]
    opt = torch.optim.AdamW(learning, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    bar = tqdm(range(steps), desc="judge", mininterval=10)
    for _ in bar:
        net.train()
        if not whole:
            net.features.eval()  # frozen features keep their BatchNorm statistics too
        x, y = _sample(rng, batch, augment=True)
        out = net(x)
        loss = sum(F.cross_entropy(out[k], y[k], ignore_index=UNLABELLED) for k in learn)
        if teacher is not None:
            with torch.no_grad():
                former = teacher(x)
            loss = loss + sum(F.kl_div(F.log_softmax(out[k], 1), F.log_softmax(former[k], 1), log_target=True,
                                       reduction="batchmean") for k in held)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return net, evaluate(net)


def save(net: JudgeNet, accuracy: dict[str, float], out_dir: Path = JUDGE_DIR, recipe: dict | None = None) -> None:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().half().contiguous() for k, v in net.state_dict().items() if v.is_floating_point()}
    save_file(state, str(out_dir / WEIGHTS))
    cfg = {"widths": list(net.widths), "vocab": {k: list(v) for k, v in net.vocab.items()}, "accuracy": accuracy,
           "trained": recipe or {}}
    (out_dir / CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")


@lru_cache(maxsize=2)
def load_judge(path: str | None = None) -> JudgeNet:
    """Load the packaged judge (fp16 on disk, fp32 in memory), in eval mode."""
    from safetensors.torch import load_file

    d = Path(path) if path else JUDGE_DIR
    if not (d / WEIGHTS).is_file():
        raise FileNotFoundError(
            f"judge weights missing in {d}; run `python -m textual_inversion.miniworld.judge --train`"
        )
    cfg = json.loads((d / CONFIG).read_text())
    net = JudgeNet({k: tuple(v) for k, v in cfg["vocab"].items()}, tuple(cfg["widths"]))
    state = {k: v.float() for k, v in load_file(str(d / WEIGHTS)).items()}
    net.load_state_dict(state, strict=False)  # BatchNorm's integer step counters are not stored
    return net.eval()


@torch.no_grad()
def predict_with_certainty(
    images: list[Image.Image], judge: JudgeNet | None = None
) -> tuple[list[dict[str, str]], dict[str, list[float]]]:
    """Attribute names the judge reads from each image, and its certainty in each name (the softmax probability it
    gives it), per attribute in the images' order."""
    net = judge or load_judge()
    out: list[dict[str, str]] = [{} for _ in images]
    certainty: dict[str, list[float]] = {}
    for i in range(0, len(images), 256):
        logits = net(to_batch(images[i : i + 256]))
        for k, lg in logits.items():
            sure, indices = lg.softmax(1).max(1)
            certainty.setdefault(k, []).extend(sure.tolist())
            for j, idx in enumerate(indices.tolist()):
                out[i + j][k] = net.vocab[k][idx]
    return out, certainty


def predict(images: list[Image.Image], judge: JudgeNet | None = None) -> list[dict[str, str]]:
    """Attribute names the judge reads from each image."""
    return predict_with_certainty(images, judge)[0]


def score(
    images: list[Image.Image], expected: dict[str, str] | list[dict[str, str]], judge: JudgeNet | None = None
) -> dict[str, float]:
    """Fraction of images whose predicted attribute matches ``expected``, per attribute.

    ``expected`` is one dict for all images or one per image; only the attributes it
    names are scored (so an image can be judged on colour alone).
    """
    exp = [expected] * len(images) if isinstance(expected, dict) else list(expected)
    if len(exp) != len(images):
        raise ValueError(f"{len(images)} images but {len(exp)} expectations")
    return match_rates(predict(images, judge), exp)


def match_rates(predictions: list[dict[str, str]], expected: list[dict[str, str]]) -> dict[str, float]:
    """Per attribute, the fraction of `predictions` that match their `expected` (only the attributes it names)."""
    hits: dict[str, list[bool]] = {}
    for p, e in zip(predictions, expected, strict=True):
        for k, v in e.items():
            if k in ATTRIBUTES:
                hits.setdefault(k, []).append(p[k] == v)
    return {k: sum(v) / len(v) for k, v in hits.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", action="store_true", help="train and save the judge")
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--output", default=str(JUDGE_DIR))
    p.add_argument("--start", metavar="FOLDER", help="train from this judge (extended with the values it lacks)")
    p.add_argument("--learn", nargs="+", choices=ATTRIBUTES, default=list(ATTRIBUTES),
                   help="with --start: the heads that learn (the features and other heads stay as they are)")
    p.add_argument("--distil", action="store_true",
                   help="with --start and --learn: the features learn too; the other heads are held to --start's "
                        "readings")
    args = p.parse_args(argv)
    if args.distil and not args.start:
        p.error("--distil holds the heads to a former judge's readings: name it with --start FOLDER")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.train:
        t0 = time.time()
        start = load_judge(args.start) if args.start else None
        net, acc = train(args.steps, seed=args.seed, start=start, learn=tuple(args.learn), distil=args.distil)
        recipe = {"steps": args.steps, "seed": args.seed, "start": args.start, "learn": args.learn,
                  "distil": args.distil}
        save(net, acc, Path(args.output), recipe)
        print(f"trained in {time.time() - t0:.0f} s; saved to {args.output}")
    else:
        acc = evaluate(load_judge(args.output))
    for k, v in acc.items():
        seen = (f"{EVALUATION_RENDERS // 4} fresh dots and blobs read as blob" if k == NO_SHAPE
                else f"{EVALUATION_RENDERS} fresh renders")
        print(f"{k:>10}: {100 * v:.2f}% on {seen}")


if __name__ == "__main__":
    main()
