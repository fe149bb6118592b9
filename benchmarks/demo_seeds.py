"""The main job (`textual-inversion demo`) over several seeds: how reliably concept (a) is learned.

One seed says little: whether the new vectors find the hidden colour depends on the draw of noise and
timesteps. Each seed is a full demo (render, train, evaluate with both baselines); the table lists
each and the spread. Written to benchmarks/results/demo.md.

    python -m benchmarks.demo_seeds [--seeds 0 1 2 3] [--threads N] [--steps N] [--fast] [--set lr=0.1 ...]

`--set` and `--steps` try other training settings than the demo's (DEMO_TRAINING, DemoConfig's steps; with
`--fast` the demo's --fast training, FAST_TRAINING);
the table's title says which ran. `--results-suffix` keeps the shipped settings' table.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

from .common import RESULTS_DIR, argument_parser, command, device_suffix, machine, print_and_write


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--threads", type=int, help="the demo's --threads (default: the demo's own default)")
    parser.add_argument("--device", default="cpu", help="cpu (the target's machine) or cuda")
    parser.add_argument("--steps", type=int, help="training steps (default: the demo's)")
    parser.add_argument("--fast", action="store_true", help="the demo's --fast training (FAST_TRAINING) as the base")
    parser.add_argument("--set", nargs="+", default=[], metavar="OPTION=VALUE",
                        help="a train option (its config name, e.g. lr_scheduler=cosine) over the demo's; "
                             "values read as JSON where they parse, else as text")
    parser.add_argument("--results-suffix", default="", help="write demo<suffix>.md (keeps other runs' files)")
    args = parser.parse_args()
    overrides = dict(parse_setting(text, parser) for text in args.set)

    import torch

    from textual_inversion.config import DemoConfig
    from textual_inversion.demo import DEMO_TRAINING, FAST_TRAINING, run_demo
    from textual_inversion.models import default_threads

    training = {**(FAST_TRAINING if args.fast else DEMO_TRAINING), **overrides}
    steps = args.steps or DemoConfig(fast=args.fast).training_steps
    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for seed in args.seeds:
            started = time.perf_counter()
            result = run_demo(DemoConfig(output_dir=f"{workdir}/seed-{seed}", seed=seed, device=args.device,
                                         threads=args.threads, steps=steps), training)
            total = time.perf_counter() - started
            report = result.evaluation
            rows.append({"seed": seed, "fidelity": report["fidelity"], "editability": report["editability"],
                         "init_word": report["baselines"]["init_word"], "words": report["baselines"]["words"],
                         "train_s": result.train_seconds, "train_steps": result.train_steps, "total_s": total})
            print(f"seed {seed}: fidelity {report['fidelity']:.2f}, editability {report['editability']:.2f}, "
                  f"train {result.train_seconds:.0f} s, total {total:.0f} s", flush=True)

    lines = [f"# `textual-inversion demo` over {len(rows)} seeds (concept (a), the hidden colour; "
             f"{machine(args.device, threads)})", "",
             f"Produced by `{command()}`. Training: {steps} steps, "
             + ", ".join(f"{k} {v}" for k, v in training.items())
             + ". Targets (issue #3): fidelity >= 0.8, init-word fidelity <= 0.2, editability >= 0.7.", "",
             "| seed | fidelity | editability | init word: fid / edit | plain words: fid / edit | steps | train s | total s |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['seed']} | {row['fidelity']:.2f} | {row['editability']:.2f} | "
                     f"{row['init_word']['fidelity']:.2f} / {row['init_word']['editability']:.2f} | "
                     f"{row['words']['fidelity']:.2f} / {row['words']['editability']:.2f} | "
                     f"{row['train_steps']} | {row['train_s']:.0f} | {row['total_s']:.0f} |")
    fidelities = [row["fidelity"] for row in rows]
    editabilities = [row["editability"] for row in rows]
    lines += ["", f"Fidelity: median {statistics.median(fidelities):.2f}, min {min(fidelities):.2f}, "
                  f"max {max(fidelities):.2f}; editability: median {statistics.median(editabilities):.2f}, "
                  f"min {min(editabilities):.2f}; seeds meeting every target: "
                  f"{sum(row['fidelity'] >= 0.8 and row['editability'] >= 0.7 and row['init_word']['fidelity'] <= 0.2 for row in rows)}"
                  f" of {len(rows)}."]
    lines += ["", f"Load average (1 min) when the last seed finished: {os.getloadavg()[0]:.1f} on "
                  f"{os.cpu_count()} cores (other jobs sharing the machine stretch the seconds, not the scores)."]
    print_and_write(lines, RESULTS_DIR / f"demo{args.results_suffix}{device_suffix(args.device)}.md")


def parse_setting(text: str, parser) -> tuple[str, object]:
    """`--set` item 'lr=0.1' as ("lr", 0.1): the value as JSON where it parses (numbers, true), else text."""
    name, equals, value = text.partition("=")
    if not equals or not name:
        parser.error(f"--set {text}: write OPTION=VALUE, e.g. lr_scheduler=cosine")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


if __name__ == "__main__":
    main()
