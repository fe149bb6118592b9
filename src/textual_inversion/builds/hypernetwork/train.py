"""Train the HyperDreamBooth hypernetwork on pre-optimised LiDB weights (see preoptimize.py).

    python -m textual_inversion.builds.hypernetwork.train [--dataset runs/hyper-dataset]
        [--output src/textual_inversion/miniworld/hypernetwork] [--validation N]

Per step: a batch of training identities, each drawn anew (background, size, position, mirroring), goes
through the hypernetwork. The loss is the weight-space error of every refinement iteration against the
identity's pre-optimised weights (normalised units), plus, with --diffusion-weight > 0, the diffusion loss
of the UNet running with the predicted weights on that same render (paper §3.3). The diffusion loss needs
no pre-optimised weights, so every training identity takes part in it.

`--validation N` withholds the last N training identities altogether, for a hypernetwork on which settings
are tuned (benchmarks/hyperdreambooth_tune.py, N = 16) or more unseen identities are measured
(benchmarks/hyperdreambooth.py --extra-identities, N = 16 + their count). The bundled hypernetwork is built
with `--validation 32`, so that 22 identities it never saw measure it, not 6.

The default is the weight-space loss alone: on miniworld, the diffusion loss added in about the same CPU
time left the weights fitted worse and the held-out identities predicted far worse
(benchmarks/results/hyperdreambooth_losses.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from PIL import Image
from tqdm.auto import tqdm

from ...atomic import atomic_path
from ...errors import UserError
from ...methods.hypernetwork import HyperConfig, HyperNetwork, image_tensor, save_hypernetwork
from ...methods.lidb_file import read_lidb
from ...methods.lidb_layers import LayerShape, attach, canonical_factors, target_layers
from ...miniworld import HYPERNETWORK_DIR
from ...miniworld.world import random_scene, render
from ...models import load_pipeline
from ...objective import diffusion_loss, encode_conditioning
from ...outputs import LIDB, OUTPUT_FILES
from ...templates import TEMPLATES
from .identities import TOKEN, Identity, all_identities, held_out, training_identities, validation_identities

logger = logging.getLogger(__name__)

SUMMARY_FILE = "training.json"  # this script's account of the run, with the identities it withheld


def load_dataset(folder: Path, withheld: frozenset[str] = frozenset()) -> tuple[list[Identity], list[dict], dict[str, str]]:
    """(identities, LiDB weights per identity, the LiDB metadata) from a pre-optimisation folder,
    leaving out the held-out identities and any named in `withheld`."""
    runs = sorted(p.parent for p in Path(folder).glob(f"*/run/{OUTPUT_FILES[LIDB]}"))
    forbidden = {identity.name for identity in held_out()} | withheld
    runs = [run for run in runs if run.parent.name not in forbidden]  # held-out identities never train it
    if len(runs) < 2:
        raise UserError(f"--dataset {folder}: needs at least 2 pre-optimised identities; run "
                        "`python -m textual_inversion.builds.hypernetwork.preoptimize` first")
    by_name = {identity.name: identity for identity in all_identities()}
    identities, weights, metadata = [], [], {}
    for run in runs:
        train, metadata = read_lidb(run / OUTPUT_FILES[LIDB])
        weights.append(train)
        identities.append(by_name[run.parent.name])
    return identities, weights, metadata


def fresh_renders(identities: list[Identity], rng: random.Random) -> list:
    """One new picture of each identity: background, size, position and mirroring drawn anew, so the
    encoder learns what makes the identity, not the few pictures its weights were fitted on."""
    scenes = [random_scene(rng, shapes=(i.shape,), colours=(i.colour,), patterns=(i.pattern,)) for i in identities]
    images = [render(scene) for scene in scenes]
    return [image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image for image in images]


def train_hypernetwork(dataset: Path, output: Path, steps: int, batch_size: int, lr: float, diffusion_weight: float,
                       iterations: int, seed: int, model: str = "miniworld", validation: int = 0) -> dict:
    """Fit a hypernetwork on `dataset`, write it to `output`; returns the run's summary.

    `validation` > 0 withholds that many training identities (validation_identities) from it entirely."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    withheld = frozenset(identity.name for identity in validation_identities(validation))
    identities, weights, metadata = load_dataset(dataset, withheld)
    pipe = load_pipeline(model)
    pipe.unet.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    shapes = target_layers(pipe.unet, int(metadata["down_dim"]), int(metadata["up_dim"]), metadata.get("lidb_layers", "all"))
    config = HyperConfig(layers=[vars(s) for s in shapes], seed=int(metadata["seed"]), down_dim=int(metadata["down_dim"]),
                         up_dim=int(metadata["up_dim"]), token=TOKEN, iterations=iterations)
    network = HyperNetwork(config)
    targets = torch.stack([flatten(w, shapes, network.max_down, network.max_up) for w in canonical_factors(weights)])
    network.mean.copy_(targets.mean(0))
    # Per-coordinate spread, floored so that coordinates that barely moved are not blown up.
    network.std.copy_(targets.std(0).clamp_min(0.1 * targets.std(0).mean()))
    normalised = network.normalise(targets)
    # The diffusion loss needs only pictures, so every training identity takes part in it; the weight-space
    # loss only where pre-optimised weights exist (the first len(targets) of the pool).
    fitted = {identity.name for identity in identities}
    pool = identities + ([i for i in training_identities(len(all_identities())) if i.name not in fitted | withheld]
                         if diffusion_weight > 0 else [])

    layers = attach(pipe.unet, shapes, config.seed)  # the UNet runs with whatever weights `external` holds
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    history = []
    started = time.monotonic()
    progress = tqdm(range(steps), desc="training hypernetwork", unit="step")
    for _ in progress:
        chosen = [rng.randrange(len(pool)) for _ in range(batch_size)]
        batch = image_tensor(fresh_renders([pool[i] for i in chosen], rng))
        estimates = network(batch)
        with_targets = [k for k, i in enumerate(chosen) if i < len(targets)]
        w_loss = (weight_loss([e[with_targets] for e in estimates], normalised[[chosen[k] for k in with_targets]], network)
                  if with_targets else torch.zeros(()))
        loss, d_loss = w_loss, None
        if diffusion_weight > 0:
            d_loss = predicted_weights_loss(pipe, scheduler, layers, network, estimates[-1], batch, rng)
            loss = loss + diffusion_weight * d_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        history.append((w_loss.item(), None if d_loss is None else d_loss.item()))
        progress.set_postfix(weights=f"{recent_mean(history, 0, 20):.3f}", diffusion=f"{recent_mean(history, 1, 20):.4f}")
    for layer in layers.values():
        layer.external = None
    output.mkdir(parents=True, exist_ok=True)
    save_hypernetwork(network, output)
    summary = {"identities": len(identities), "diffusion_identities": len(pool), "steps": steps, "batch_size": batch_size, "lr": lr,
               "diffusion_weight": diffusion_weight, "iterations": iterations, "seconds": round(time.monotonic() - started),
               "parameters": sum(p.numel() for p in network.parameters()),
               "final_weight_loss": recent_mean(history, 0, 50),
               "final_diffusion_loss": recent_mean(history, 1, 50) if diffusion_weight > 0 else None,
               "first_weight_loss": history[0][0], "validation": sorted(withheld)}
    with atomic_path(output / SUMMARY_FILE) as temporary:
        temporary.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def predicted_weights_loss(pipe, scheduler, layers: dict, network: HyperNetwork, estimate: torch.Tensor,
                           pixels: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """The UNet's denoising loss on the renders `pixels` with the predicted weights, prompted with the token."""
    with torch.no_grad():
        clean = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
    for layer, (down, up) in zip(layers.values(), network.split(network.denormalise(estimate)), strict=True):
        layer.external = (down, up)
    noise = torch.randn_like(clean)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(clean),))
    prompts = [rng.choice(TEMPLATES["object"]).format(TOKEN) for _ in range(len(clean))]
    conditioning = encode_conditioning(pipe, prompts, [], clean.device)
    return diffusion_loss(pipe.unet, scheduler, clean, noise, timesteps, conditioning).mean()


def flatten(train: dict[str, tuple[torch.Tensor, torch.Tensor]], shapes: list[LayerShape], max_down: int,
            max_up: int) -> torch.Tensor:
    """{layer: (down, up)} of a LiDB file -> (layers, max_down + max_up) in the hypernetwork's order."""
    flat = torch.zeros(len(shapes), max_down + max_up)
    for index, shape in enumerate(shapes):
        down, up = train[shape.name]
        flat[index, :shape.down_dim] = down
        flat[index, max_down:max_down + shape.up_dim] = up
    return flat


def read_training_summary(folder: str | Path | None = None) -> dict:
    """How the hypernetwork in `folder` (default: the bundled one) was trained, as train_hypernetwork summarised it:
    steps, losses, and under "validation" the identities it withheld; {} for one without a summary."""
    path = (Path(folder) if folder else HYPERNETWORK_DIR) / SUMMARY_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def weight_loss(estimates: list[torch.Tensor], target: torch.Tensor, network: HyperNetwork) -> torch.Tensor:
    """Mean squared error in normalised weight space, averaged over the refinement iterations."""
    mask = network.mask
    return sum(F.mse_loss(e * mask, target * mask, reduction="sum") / (mask.sum() * len(target))
               for e in estimates) / len(estimates)


def recent_mean(history: list[tuple], column: int, window: int) -> float:
    values = [row[column] for row in history[-window:] if row[column] is not None]
    return sum(values) / len(values) if values else float("nan")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="runs/hyper-dataset")
    parser.add_argument("--output", default=str(HYPERNETWORK_DIR))
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--diffusion-weight", type=float, default=0.0, help="weight of the diffusion loss (0: weight-space loss only, no UNet pass)")
    parser.add_argument("--iterations", type=int, default=4, help="refinement iterations of the decoder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="miniworld")
    parser.add_argument("--validation", type=int, default=0,
                        help="withhold this many training identities (the last of the shuffled list) for tuning")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        summary = train_hypernetwork(Path(args.dataset), Path(args.output), args.steps, args.batch_size, args.lr,
                                     args.diffusion_weight, args.iterations, args.seed, args.model, args.validation)
    except UserError as error:
        raise SystemExit(f"error: {error}") from None
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
