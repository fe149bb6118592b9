"""A small CNN that reads a miniworld image's attributes, for scoring generations.

    python -m textual_inversion.miniworld.judge --train [--steps N] [--threads N]

Heads: shape (star included), colour (hidden colour included), background, size,
pattern. Trained on fresh renders with mild blur/noise so that it also reads the
slightly soft images a diffusion model produces. Weights ship in ``judge/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch import nn

from ..images import to_tensor
from .world import ATTRIBUTES, SHAPES, VOCAB, random_scene, render

log = logging.getLogger(__name__)

JUDGE_DIR = Path(__file__).resolve().parent / "judge"
WEIGHTS = "judge.safetensors"
CONFIG = "config.json"
WIDTHS = (32, 64, 96, 128)


class JudgeNet(nn.Module):
    """Four conv stages (64 -> 8 px), global avg+max pooling, one linear head per attribute.

    The full-resolution stage has a single conv (it dominates the cost); later stages have two.
    """

    def __init__(self, vocab: dict[str, tuple[str, ...]] = VOCAB, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        layers, c_in = [], 3
        for i, c in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [nn.Conv2d(c_in, c, 3, stride, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            if i > 0:
                layers += [nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        self.features = nn.Sequential(*layers)
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


def _sample(rng: random.Random, n: int, augment: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    # Uniform over every value (star and the hidden colour included).
    scenes = [random_scene(rng, shapes=SHAPES, hidden_colour_prob=1 / len(VOCAB["colour"])) for _ in range(n)]
    images = [render(s) for s in scenes]
    if augment:
        images = [_augment(im, rng) for im in images]
    labels = {k: torch.tensor([VOCAB[k].index(getattr(s, k)) for s in scenes]) for k in ATTRIBUTES}
    return to_batch(images), labels


@torch.no_grad()
def evaluate(net: JudgeNet, n: int = 2000, seed: int = 12345) -> dict[str, float]:
    """Per-head accuracy on ``n`` fresh, un-augmented renders."""
    net.eval()
    x, y = _sample(random.Random(seed), n, augment=False)
    logits = net(x)
    return {k: float((logits[k].argmax(1) == y[k]).float().mean()) for k in ATTRIBUTES}


def train(
    steps: int = 2500, batch: int = 64, seed: int = 0, lr: float = 2e-3
) -> tuple[JudgeNet, dict[str, float]]:
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = random.Random(seed)
    net = JudgeNet()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    bar = tqdm(range(steps), desc="judge", mininterval=10)
    for _ in bar:
        net.train()
        x, y = _sample(rng, batch, augment=True)
        out = net(x)
        loss = sum(F.cross_entropy(out[k], y[k]) for k in ATTRIBUTES)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return net, evaluate(net)


def save(net: JudgeNet, accuracy: dict[str, float], out_dir: Path = JUDGE_DIR) -> None:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().half().contiguous() for k, v in net.state_dict().items() if v.is_floating_point()}
    save_file(state, str(out_dir / WEIGHTS))
    cfg = {"widths": list(WIDTHS), "vocab": {k: list(v) for k, v in net.vocab.items()}, "accuracy": accuracy}
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
def predict(images: list[Image.Image], judge: JudgeNet | None = None) -> list[dict[str, str]]:
    """Attribute names the judge reads from each image."""
    net = judge or load_judge()
    out: list[dict[str, str]] = [{} for _ in images]
    for i in range(0, len(images), 256):
        logits = net(to_batch(images[i : i + 256]))
        for k, lg in logits.items():
            for j, idx in enumerate(lg.argmax(1).tolist()):
                out[i + j][k] = net.vocab[k][idx]
    return out


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
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.train:
        t0 = time.time()
        net, acc = train(args.steps, seed=args.seed)
        save(net, acc, Path(args.output))
        print(f"trained in {time.time() - t0:.0f} s; saved to {args.output}")
    else:
        acc = evaluate(load_judge(args.output))
    for k, v in acc.items():
        print(f"{k:>10}: {100 * v:.2f}% on 2000 fresh renders")


if __name__ == "__main__":
    main()
