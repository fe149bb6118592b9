"""Steps and seconds until a concept is learned (judge fidelity >= 0.8), for several starting points.

For each bundled miniworld concept and each setting, one run keeps every checkpoint; each checkpoint's
embedding is then scored on the fidelity prompts. Reported: the first step that reaches the target,
the training seconds up to it, and where the early stop (if on) ended the run. Written to
benchmarks/results/time_to_concept.md.

    python benchmarks/time_to_concept.py [--concepts hidden-colour ...] [--steps 400] [--every 25]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "word init (before)": {},
    "cross init": {"init_strategy": "cross"},
    "cross init + keep norm": {"init_strategy": "cross", "keep_norm": True},
    "cross init + early stop": {"init_strategy": "cross", "early_stop_window": 25, "early_stop_threshold": 0.1},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", nargs="+", default=["hidden-colour"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=25, help="checkpoint and score every N steps")
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--lr", type=float, default=0.02)
    args = parser.parse_args()

    from safetensors.torch import load_file

    from textual_inversion import TrainConfig, load_concepts, train
    from textual_inversion.checkpoints import list_checkpoints
    from textual_inversion.evaluate import ConceptSpec, evaluate_concept
    from textual_inversion.formats import Embedding
    from textual_inversion.models import load_pipeline

    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for concept in args.concepts:
            folder = ROOT / "examples" / "concepts" / concept
            spec = ConceptSpec.from_toml(folder / "concept.toml")
            for name in args.settings:
                output = Path(workdir) / f"{concept}-{len(rows)}"
                result = train(TrainConfig(images=str(folder), token=spec.token, init_token=spec.init_word,
                                           property=spec.property, steps=args.steps, lr=args.lr, batch_size=4,
                                           checkpoint_every=args.every, keep_checkpoints=0, device="cpu",
                                           output_dir=str(output), **SETTINGS[name]))
                seconds_per_step = result.seconds / result.steps
                reached = None
                for checkpoint in list_checkpoints(output):
                    step = int(checkpoint.name.split("-")[1])
                    pipe = load_pipeline("miniworld")
                    weights = load_file(checkpoint / "weights.safetensors")
                    load_concepts(pipe, [Embedding(spec.token, weights)])
                    report = evaluate_concept(pipe, spec, output / "scores" / checkpoint.name, args.num_images,
                                              conditions=("concept",), edits=False)
                    print(f"{concept} | {name} | step {step}: fidelity {report['fidelity']:.2f}", flush=True)
                    if report["fidelity"] >= args.target:
                        reached = (step, report["fidelity"])
                        break
                rows.append({"concept": concept, "setting": name, "reached": reached, "ran": result.steps,
                             "early": result.stopped_early, "seconds_per_step": seconds_per_step})

    lines = [f"# Time to concept on miniworld (CPU; fidelity >= {args.target} on the fidelity prompts, "
             f"{args.num_images} images each; checked every {args.every} steps; lr {args.lr}, batch 4)", "",
             "Produced by `python benchmarks/time_to_concept.py`. Seconds = steps x (the run's wall time / its steps), "
             "so loading and set-up are counted in; scoring is not.", "",
             "| concept | setting | steps to target | seconds to target | fidelity then | run ended at |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        if row["reached"]:
            step, fidelity = row["reached"]
            cells = f"{step} | {step * row['seconds_per_step']:.0f} | {fidelity:.2f}"
        else:
            cells = "not reached | - | -"
        ended = f"{row['ran']}" + (" (early stop)" if row["early"] else "")
        lines.append(f"| {row['concept']} | {row['setting']} | {cells} | {ended} |")
    table = "\n".join(lines) + "\n"
    print(table)
    (ROOT / "benchmarks" / "results" / "time_to_concept.md").write_text(table)


if __name__ == "__main__":
    main()
