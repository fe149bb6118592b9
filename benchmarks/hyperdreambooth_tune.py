"""Tune HyperDreamBooth's fast fine-tune (steps, learning rate) on validation identities, not the held-out ones.

The hypernetwork here is one trained without the 16 tuning identities (python -m
textual_inversion.builds.hypernetwork.train --validation 16), so they are as unseen to it as the held-out
ones are to the bundled one. Each setting `steps:lr[:warm-up steps]` is scored by fidelity on each of them
from ONE render, exactly as benchmarks/hyperdreambooth.py scores condition (b); `0:0` is the prediction
alone. The held-out benchmark then runs once with the best.

    python -m textual_inversion.builds.hypernetwork.train --dataset runs/hyper-dataset-tok --output runs/hyper-val16 \
        --validation 16
    python -m benchmarks.hyperdreambooth_tune --hypernetwork runs/hyper-val16 --settings 0:0 40:3e-3 40:1e-3 ...

`--shard K/N` runs every N-th identity (from the K-th) so two processes can share a 2-core machine; results
per identity and setting are kept in --workdir, so a rerun resumes and the last one writes the table.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch

from .common import RESULTS_DIR, argument_parser, command, print_and_write
from .hyperdreambooth import hypernetwork_summary, run_condition  # the benchmark's own (a)/(b) runner

RESULTS = RESULTS_DIR / "hyperdreambooth_tune.md"


def parse_setting(text: str) -> tuple[int, float, int]:
    """steps:lr[:warmup steps] -> (steps, lr, warmup)."""
    steps, lr, warmup = (text.split(":") + ["0"])[:3]
    return int(steps), float(lr), int(warmup)


def label(setting: tuple[int, float, int]) -> str:
    steps, lr, warmup = setting
    return "prediction only" if steps == 0 else f"{steps} steps, lr {lr:g}" + (f", warm-up {warmup}" if warmup else "")


def folder_name(setting: tuple[int, float, int]) -> str:
    steps, lr, warmup = setting
    return f"{steps}-{lr:g}" + (f"-w{warmup}" if warmup else "")


def table_lines(results: dict, settings: list, identities: list, args) -> list[str]:
    lines = [f"# HyperDreamBooth fast fine-tune, tuned on {len(identities)} validation identities (CPU, 1 thread)", "",
             f"Produced by `{command()}`. The hypernetwork was trained "
             "without these identities (`builds.hypernetwork.train --validation`); each is learned from ONE render and scored by "
             f"the judge's fidelity ({args.num_images} images per fidelity prompt, no edit prompts). The held-out "
             "identities of benchmarks/hyperdreambooth.py play no part here.", "",
             "| setting | fidelity (mean) | identities done | mean CPU time |", "|---|---|---|---|"]
    for setting in settings:
        rows = [results[(i.name, setting)] for i in identities if (i.name, setting) in results]
        if rows:
            lines.append(f"| {label(setting)} | {statistics.fmean(r['fidelity'] for r in rows):.3f} | {len(rows)} | "
                         f"{statistics.fmean(r['cpu_seconds'] for r in rows):.1f} s |")
    complete = [s for s in settings if s[0] > 0 and all((i.name, s) in results for i in identities)]
    if complete:  # highest mean fidelity; on a tie, the fewer steps (the faster fine-tune)
        best = max(complete, key=lambda s: (statistics.fmean(results[(i.name, s)]["fidelity"] for i in identities), -s[0]))
        lines += ["", f"Best fine-tune setting (highest mean fidelity, ties to fewer steps): {label(best)}."]
    lines += ["", "## Per identity", "", "| identity | " + " | ".join(label(s) for s in settings) + " |",
              "|---|" + "---|" * len(settings)]
    for identity in identities:
        cells = [f"{results[(identity.name, s)]['fidelity']:.2f}" if (identity.name, s) in results else "-" for s in settings]
        lines.append(f"| {identity.name} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--hypernetwork", required=True, help="a hypernetwork trained without the tuning identities (--validation 16)")
    parser.add_argument("--settings", nargs="+", default=["0:0", "40:3e-3"], help="steps:lr or steps:lr:warm-up steps; 0:0 is the prediction alone")
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--num-images", type=int, default=4, help="images per fidelity prompt")
    parser.add_argument("--shard", default="0/1", help="K/N: this process takes identities K, K+N, ...")
    parser.add_argument("--workdir", default="runs/tune-hyperdreambooth")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(1)

    from textual_inversion.builds.hypernetwork.identities import (
        TUNING,
        all_identities,
        validation_identities,
        write_images,
    )

    # Only the TUNING identities: a hypernetwork that withheld more (the bundled one, --validation 32) also
    # withheld the extra ones the benchmark measures, and tuning on those would leak into its result.
    tuning = {identity.name for identity in validation_identities(TUNING)}
    _, info = hypernetwork_summary(args.hypernetwork)
    if not tuning <= set(info.get("validation", [])):
        raise SystemExit(f"error: --hypernetwork {args.hypernetwork}: was trained on the {TUNING} tuning identities; "
                         f"retrain it with `python -m textual_inversion.builds.hypernetwork.train --validation {TUNING}`")
    identities = [i for i in all_identities() if i.name in tuning]
    settings = [parse_setting(text) for text in args.settings]
    shard, shards = (int(x) for x in args.shard.split("/"))
    workdir = Path(args.workdir)
    results = {}
    for position, identity in enumerate(identities):
        image_dir = write_images(identity, workdir / identity.name / "image", 1)
        for setting in settings:
            done = workdir / identity.name / folder_name(setting) / "result.json"
            if not done.is_file() and position % shards == shard:
                row = run_condition("prediction" if setting[0] == 0 else "prediction+fine-tune", identity, image_dir,
                                    done.parent, hypernetwork=args.hypernetwork, steps=setting[0], lr=setting[1],
                                    warmup=setting[2], rank=args.rank, num_images=args.num_images, edits=False)
                done.write_text(json.dumps(row))
                print(f"{identity.name:<24} {label(setting):<24} fidelity {row['fidelity']:.2f}", flush=True)
            if done.is_file():
                results[(identity.name, setting)] = json.loads(done.read_text())
    print_and_write(table_lines(results, settings, identities, args), Path(args.results))


if __name__ == "__main__":
    main()
