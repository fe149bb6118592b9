"""The judge's evaluation with its prompts generated one at a time against several per pipeline call.

Trains the demo concept once (the demo's settings, seed 0), then evaluates it with `prompts_per_call` 1 and
the default, in alternating rounds in one process, and checks that the judge reads the same thing in every
image either way. Written to benchmarks/results/evaluation_speed.md.

    python -m benchmarks.evaluation_speed [--rounds 2] [--threads 2]
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from .common import (
    RESULTS_DIR,
    argument_parser,
    bundled_concept,
    command,
    machine,
    print_and_write,
    with_former_defaults,
)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from textual_inversion.concepts import load_concepts
    from textual_inversion.config import TrainConfig
    from textual_inversion.demo import DEMO_TRAINING
    from textual_inversion.evaluate import PROMPTS_PER_CALL, evaluate_concept
    from textual_inversion.models import load_pipeline
    from textual_inversion.training import train

    torch.set_num_threads(args.threads)
    folder, spec = bundled_concept("hidden-colour")
    settings = (1, PROMPTS_PER_CALL)
    seconds = {n: [] for n in settings}
    reports = {}
    with tempfile.TemporaryDirectory() as workdir:
        run = Path(workdir) / "run"
        train(TrainConfig.from_values(with_former_defaults(dict(
            images=str(folder), token=spec.token, init_token=spec.init_word, steps=800, seed=0, output_dir=str(run),
            checkpoint_every=0, threads=args.threads,
            **{k: v for k, v in DEMO_TRAINING.items() if k in ("lr", "vectors", "batch_size")}))))
        pipe = load_pipeline("miniworld")
        load_concepts(pipe, [run])
        for round_index in range(args.rounds):
            for n in settings:
                started = time.perf_counter()
                reports[n] = evaluate_concept(pipe, spec, Path(workdir) / f"eval-{n}-{round_index}", prompts_per_call=n)
                seconds[n].append(time.perf_counter() - started)
                print(f"round {round_index}, {n} prompt(s) per call: {seconds[n][-1]:.1f} s", flush=True)

    one, many = reports[1], reports[PROMPTS_PER_CALL]
    same = sum(a["predicted"] == b["predicted"] for a, b in zip(one["prompts"], many["prompts"], strict=True))
    ratio = statistics.median(seconds[PROMPTS_PER_CALL]) / statistics.median(seconds[1])
    lines = [f"# The judge's evaluation: prompts one at a time against {PROMPTS_PER_CALL} per call "
             f"({machine('cpu', args.threads)})", "",
             f"Produced by `{command()}`. The demo concept (hidden-colour) trained once with the demo's settings "
             f"(seed 0, 800 steps), then `evaluate_concept` with its three conditions ({len(one['prompts'])} prompts "
             f"of 4 images, 25 steps), alternating, {args.rounds} rounds.", "",
             "| prompts per call | seconds (each round) | median | fidelity | editability | init word fid / edit | "
             "plain words fid / edit |", "|---|---|---|---|---|---|---|"]
    for n in settings:
        report = reports[n]
        baselines = report["baselines"]
        lines.append(f"| {n} | {', '.join(f'{s:.1f}' for s in seconds[n])} | {statistics.median(seconds[n]):.1f} | "
                     f"{report['fidelity']:.2f} | {report['editability']:.2f} | "
                     f"{baselines['init_word']['fidelity']:.2f} / {baselines['init_word']['editability']:.2f} | "
                     f"{baselines['words']['fidelity']:.2f} / {baselines['words']['editability']:.2f} |")
    lines += ["", f"Time ratio ({PROMPTS_PER_CALL} per call / 1): {ratio:.2f}. The judge's predictions were the same "
                  f"for {same} of {len(one['prompts'])} prompts (every image compared).",
              "", f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."]
    print_and_write(lines, RESULTS_DIR / "evaluation_speed.md")


if __name__ == "__main__":
    main()
