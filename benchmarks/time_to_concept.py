"""Steps and seconds until a concept is learned (judge fidelity >= 0.8), for several starting points.

For each bundled miniworld concept and each setting, one run keeps every checkpoint; each checkpoint's
embedding is then scored on the fidelity prompts. Reported: the first step that reaches the target,
the training seconds up to it, and where the early stop (if on) ended the run. Written to
benchmarks/results/time_to_concept.md.

    python -m benchmarks.time_to_concept [--concepts hidden-colour ...] [--steps 400] [--every 25]
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

from .common import (
    RESULTS_DIR,
    argument_parser,
    bundled_concept,
    command,
    device_suffix,
    machine,
    print_and_write,
    with_former_defaults,
)

# "captions": False trains on the pictures alone (the paper's "a photo of a {}" templates); otherwise each
# picture's caption file (miniworld grammar naming background and size) is used.
SETTINGS = {
    "1 vector, templates (before)": {"captions": False},
    "6 vectors, templates": {"vectors": 6, "captions": False},
    "6 vectors, captions": {"vectors": 6},
    "6 vectors, captions, batch 2": {"vectors": 6, "batch_size": 2},
    "6 vectors, captions, lr 0.1": {"vectors": 6, "lr": 0.1},
    "6 vectors, captions, lr 0.1, cosine": {"vectors": 6, "lr": 0.1, "lr_scheduler": "cosine"},
    "6 vectors, captions, batch 8": {"vectors": 6, "batch_size": 8},
    "6 vectors, captions, batch 8, lr 0.1": {"vectors": 6, "batch_size": 8, "lr": 0.1},
    "6 vectors, captions, cross init": {"vectors": 6, "init_strategy": "cross"},
    "6 vectors, captions + keep norm": {"vectors": 6, "keep_norm": True},
    "6 vectors, captions + early stop": {"vectors": 6, "early_stop_window": 50, "early_stop_threshold": 0.1},
}


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--concepts", nargs="+", default=["hidden-colour"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--every", type=int, default=25, help="checkpoint and score every N steps")
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu (the target's machine) or cuda")
    parser.add_argument("--results-suffix", default="", help="write time_to_concept<suffix>.md (keeps other runs' files)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for concept in args.concepts:
            folder, spec = bundled_concept(concept)
            for name in args.settings:
                for seed in args.seeds:
                    output = Path(workdir) / f"{concept}-{len(rows)}"
                    rows.append({"concept": concept, "setting": name, "seed": seed,
                                 **time_one_run(args, spec, folder, output, seed, SETTINGS[name])})

    lines = [f"# Time to concept on miniworld ({machine(args.device, args.threads)}; fidelity >= {args.target} on the fidelity "
             f"prompts, {args.num_images} images each; checked every {args.every} steps; lr {args.lr}, batch 4 unless the setting says otherwise)", "",
             f"Produced by `{command()}`. Seconds = steps x (the run's time in the training function / its steps): "
             "latent encoding and checkpoints are counted in; scoring is not, nor are Python imports and model "
             "loading (a 1-step `train` took 5.4 s from launch to exit on 2 cores; benchmarks/concept_end_to_end.py "
             "times whole commands). One row per seed: whether a run finds the "
             "concept depends on its draw of noise and timesteps.", "",
             "| concept | setting | seed | steps to target | seconds to target | fidelity then | run ended at |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["reached"]:
            step, fidelity = row["reached"]
            cells = f"{step} | {step * row['seconds_per_step']:.0f} | {fidelity:.2f}"
        else:
            cells = f"not reached (best {row['best']:.2f}) | - | -"
        ended = f"{row['ran']}" + (" (early stop)" if row["early"] else "")
        lines.append(f"| {row['concept']} | {row['setting']} | {row['seed']} | {cells} | {ended} |")
    lines += ["", "| concept | setting | seeds reaching the target | median seconds of those |", "|---|---|---|---|"]
    for concept in args.concepts:
        for name in args.settings:
            group = [r for r in rows if r["concept"] == concept and r["setting"] == name]
            seconds = [r["reached"][0] * r["seconds_per_step"] for r in group if r["reached"]]
            median = f"{statistics.median(seconds):.0f}" if seconds else "-"
            lines.append(f"| {concept} | {name} | {len(seconds)} of {len(group)} | {median} |")
    lines += ["", f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
                  "(other jobs sharing the machine stretch the seconds, not the steps)."]
    print_and_write(lines, RESULTS_DIR / f"time_to_concept{device_suffix(args.device)}{args.results_suffix}.md")


def time_one_run(args, spec, folder: Path, output: Path, seed: int, settings: dict) -> dict:
    """Train with a checkpoint every `args.every` steps, then score checkpoints until one reaches the target."""
    import shutil

    from safetensors.torch import load_file

    from textual_inversion import TrainConfig, load_concepts, train
    from textual_inversion.checkpoints import list_checkpoints
    from textual_inversion.evaluate import evaluate_concept
    from textual_inversion.formats import Embedding
    from textual_inversion.models import load_pipeline

    settings = dict(settings)
    if not settings.pop("captions", True):
        pictures_only = output.with_name(output.name + "-pictures")
        pictures_only.mkdir(parents=True)
        for picture in folder.glob("*.png"):
            shutil.copy(picture, pictures_only)
        folder = pictures_only
    result = train(TrainConfig.from_values(with_former_defaults(dict(
        images=str(folder), token=spec.token, init_token=spec.init_word, property=spec.property, steps=args.steps,
        seed=seed, checkpoint_every=args.every, keep_checkpoints=0, device=args.device, output_dir=str(output),
        **{"lr": args.lr, "batch_size": 4, **settings}))))
    reached, best = None, 0.0
    for checkpoint in list_checkpoints(output):
        step = int(checkpoint.name.split("-")[1])
        pipe = load_pipeline("miniworld").to(args.device)
        load_concepts(pipe, [Embedding(spec.token, load_file(checkpoint / "weights.safetensors"))])
        report = evaluate_concept(pipe, spec, output / "scores" / checkpoint.name, args.num_images,
                                  conditions=("concept",), edits=False)
        print(f"{spec.token} | {settings} | seed {seed} | step {step}: fidelity {report['fidelity']:.2f}", flush=True)
        best = max(best, report["fidelity"])
        if report["fidelity"] >= args.target:
            reached = (step, report["fidelity"])
            break
    return {"reached": reached, "best": best, "ran": result.steps, "early": result.stopped_early,
            "seconds_per_step": result.seconds / result.steps}


if __name__ == "__main__":
    main()
