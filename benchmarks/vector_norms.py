"""How the demo's vectors move at each learning rate: their length, and the angle they turn through per step.

miniworld's word embeddings are about 0.23 long; AdamW moves every coordinate of a vector by up to the rate each
step, whatever the gradient's size. This benchmark trains the demo (its concept and settings, no moving average)
at each `--lrs` rate, checkpointing every `--every` steps, and reports the vectors' mean length and the mean
angle between consecutive checkpoints per step. The text encoder normalises each position (CLIP's layer norms),
so a vector far longer than the rest of its input acts through its direction; if the angle per step comes out
alike at every rate, the rate sets the vectors' length, not how fast they learn.

    python -m benchmarks.vector_norms [--lrs 0.05 0.1 0.2] [--steps 200] [--every 10] [--seed 4] [--threads 2]
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
from pathlib import Path

from .common import RESULTS_DIR, argument_parser, command, machine, print_and_write


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--lrs", nargs="+", type=float, default=[0.05, 0.1, 0.2])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from textual_inversion import train
    from textual_inversion.checkpoints import list_checkpoints, load_checkpoint
    from textual_inversion.config import DemoConfig
    from textual_inversion.demo import DEMO_TRAINING, demo_train_config, write_concept_images

    torch.set_num_threads(args.threads)
    lengths, angles = {}, {}  # lr -> {step: mean length}, {step: mean degrees per step since the last checkpoint}
    with tempfile.TemporaryDirectory() as workdir:
        spec = write_concept_images(Path(workdir) / "images")
        for lr in args.lrs:
            demo = DemoConfig(output_dir=workdir, seed=args.seed, threads=args.threads, steps=args.steps)
            run = Path(workdir) / f"lr-{lr}"
            train(demo_train_config(demo, spec, {**DEMO_TRAINING, "lr": lr, "ema_decay": 0.0}).replaced(
                output_dir=str(run), checkpoint_every=args.every, keep_checkpoints=0, validation_prompt=None))
            lengths[lr], angles[lr], previous = {}, {}, None
            for checkpoint in list_checkpoints(run):
                weights, state = load_checkpoint(checkpoint)
                vectors = weights["text_encoder"].double()
                lengths[lr][state["step"]] = vectors.norm(dim=-1).mean().item()
                if previous is not None:
                    cosines = torch.nn.functional.cosine_similarity(vectors, previous, dim=-1).clamp(-1, 1)
                    angles[lr][state["step"]] = math.degrees(torch.arccos(cosines).mean().item()) / args.every
                previous = vectors
            print(lr, lengths[lr], angles[lr], flush=True)

    steps = sorted(lengths[args.lrs[0]])
    shown = [step for step in steps if step in (args.every, 50, 100, 150) or step == steps[-1]]
    lines = [f"# The demo's vectors at each learning rate: length and turn per step ({machine('cpu', args.threads)})",
             "", f"Produced by `{command()}`. The demo's concept and settings (6 vectors from 'circle', about 0.23 "
             f"long; batch {DEMO_TRAINING['batch_size']}, seed {args.seed}), no moving average; a checkpoint every "
             f"{args.every} steps. Length: the vectors' mean length. Turn: the mean angle between a vector and itself "
             f"{args.every} steps before, per step (degrees).", "",
             "| lr | " + " | ".join(f"length at step {step}" for step in shown)
             + f" | turn per step, steps {2 * args.every}-{steps[-1]}: median | the same, from step 60 |",
             "|---|" + "---|" * (len(shown) + 2)]
    for lr in args.lrs:
        late = [degrees for step, degrees in angles[lr].items() if step >= 60]
        lines.append(f"| {lr} | " + " | ".join(f"{lengths[lr][step]:.2f}" for step in shown)
                     + f" | {statistics.median(angles[lr].values()):.2f} | {statistics.median(late):.2f} |")
    lines += ["", f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."]
    print_and_write(lines, RESULTS_DIR / "vector_norms.md")


if __name__ == "__main__":
    main()
