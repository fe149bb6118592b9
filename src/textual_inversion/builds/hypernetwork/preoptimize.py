"""Fit LiDB weights for many miniworld identities: the hypernetwork's training set.

    python -m textual_inversion.builds.hypernetwork.preoptimize [--output runs/hyper-dataset] [--identities 186]
        [--steps 150] [--layers all|cross-kv] [--down learn|token] [--shard I/N]

Each identity gets its renders in `<output>/<name>/images/` and a LiDB run of the shared training loop
in `<output>/<name>/run/` (its `lidb_weights.safetensors` is written atomically). Resumable: identities
whose weights exist are skipped. Every run uses the same aux seed and starting point, so the weights of
different identities live in one coordinate system, which the hypernetwork needs. With `--down token` (the
default) every identity also shares one fixed down factor that reads only the token, so a fit changes only
what the token says: on miniworld that makes the fits predictable from what the identity looks like
(benchmarks/results/hyperdreambooth_oracle.md), which the paper's learned down factor was not.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ...config import TrainConfig
from ...methods.lidb_layers import LiDBLinear
from ...models import load_pipeline
from ...outputs import LIDB, OUTPUT_FILES
from ...training import train
from .identities import TOKEN, training_identities, write_images

logger = logging.getLogger(__name__)


def lidb_config(images: Path, output_dir: Path, steps: int, lr: float, down_dim: int, up_dim: int, seed: int,
                layers: str = "all", model: str = "miniworld", device: str = "cpu", down: str = "learn") -> TrainConfig:
    """The LiDB run every identity (and the hypernetwork's aux matrices) shares."""
    return TrainConfig(model=model, method="lidb", images=str(images), token=TOKEN, steps=steps, lr=lr, batch_size=4,
                       options={"down_dim": down_dim, "up_dim": up_dim, "lidb_layers": layers, "lidb_down": down},
                       seed=seed,
                       checkpoint_every=0, keep_checkpoints=1, overwrite=True, device=device, output_dir=str(output_dir))


def remove_lidb_layers(unet) -> None:
    """Put back the plain Linears a LiDB run left on `unet`, so the next identity starts from the base model."""
    for name, module in list(unet.named_modules()):
        if isinstance(module, LiDBLinear):
            parent, _, child = name.rpartition(".")
            setattr(unet.get_submodule(parent), child, module.base)


def preoptimize(output: Path, identities: int, steps: int, lr: float, images_per_identity: int, down_dim: int,
                up_dim: int, seed: int, layers: str = "cross-kv", shard: tuple[int, int] = (0, 1), model: str = "miniworld",
                device: str = "cpu", down: str = "token") -> list[Path]:
    """Fit each training identity of `shard` (number, count) that has no weights yet; returns their folders."""
    pipe = load_pipeline(model)
    folders = []
    todo = training_identities(identities)[shard[0]::shard[1]]
    progress = tqdm(todo, desc="pre-optimising LiDB", unit="identity")
    for identity in progress:
        folder = Path(output) / identity.name
        folders.append(folder)
        if (folder / "run" / OUTPUT_FILES[LIDB]).is_file():
            continue
        images = write_images(identity, folder / "images", images_per_identity)
        started = time.monotonic()
        config = lidb_config(images, folder / "run", steps, lr, down_dim, up_dim, seed, layers, model, device, down)
        result = train(config, pipe=pipe)
        remove_lidb_layers(pipe.unet)
        progress.set_postfix(loss=f"{result.final_loss:.4f}", seconds=f"{time.monotonic() - started:.0f}")
    return folders


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="runs/hyper-dataset")
    parser.add_argument("--identities", type=int, default=186, help="training identities (held-out ones excluded)")
    parser.add_argument("--steps", type=int, default=150, help="LiDB steps per identity (batch 4)")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--images", type=int, default=4, help="renders per identity")
    parser.add_argument("--down-dim", type=int, default=100)
    parser.add_argument("--up-dim", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="aux matrices' seed, shared by every identity")
    parser.add_argument("--layers", default="cross-kv", choices=("all", "cross-kv"), help="which projections get LiDB "
                        "weights (the bundled hypernetwork: cross-kv)")
    parser.add_argument("--down", default="token", choices=("learn", "token"), help="LiDB down factor: fixed to a "
                        "reader of the token (the bundled hypernetwork; see TrainConfig.lidb_down) or learned (paper)")
    parser.add_argument("--shard", default="0/1", help="I/N: fit only every N-th identity from the I-th, so N "
                        "processes can share the work")
    parser.add_argument("--model", default="miniworld")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        shard = tuple(int(part) for part in args.shard.split("/"))
        if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
            raise ValueError
    except ValueError:
        parser.error(f"--shard {args.shard}: write I/N with 0 <= I < N, e.g. 1/2")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    preoptimize(Path(args.output), args.identities, args.steps, args.lr, args.images, args.down_dim, args.up_dim,
                args.seed, args.layers, shard, args.model, args.device, args.down)


if __name__ == "__main__":
    main()
