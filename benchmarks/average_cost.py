"""What the demo's moving average (`--ema-decay 0.99`) costs per training step, measured side by side.

The demo's settings against the same without the average (`--ema-decay 0`; the rate does not change the
work of a step, so it stays the demo's). Each run is a fresh process training the bundled hidden-colour
concept; two lengths per variant give the marginal seconds per step (their difference over the extra steps:
loading and set-up cancel). Variants alternate within each round.

    python -m benchmarks.average_cost [--steps 50 250] [--rounds 2] [--threads 1]
"""

from __future__ import annotations

import os
import statistics
import tempfile

from .common import RESULTS_DIR, command, machine, print_and_write
from .compile_speed import run_once, two_length_parser

VARIANTS = {"with the average (the demo's)": {}, "without it": {"ema_decay": 0.0}}


def main() -> None:
    args = two_length_parser(__doc__).parse_args()
    short, long = args.steps
    os.environ["HF_HUB_OFFLINE"] = "1"  # the children inherit it
    per_step = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as workdir:
        for round_index in range(args.rounds):
            names = list(VARIANTS) if round_index % 2 == 0 else list(reversed(VARIANTS))
            for name in names:
                seconds = {steps: run_once(steps, args.threads, workdir, VARIANTS[name])["train_s"]
                           for steps in (short, long)}
                per_step[name].append(1000 * (seconds[long] - seconds[short]) / (long - short))
                print(name, f"{per_step[name][-1]:.1f} ms per step", flush=True)
    ratios = [a / b for a, b in zip(*per_step.values(), strict=True)]
    lines = [f"# The demo's moving average: cost per training step ({machine('cpu', args.threads)})", "",
             f"Produced by `{command()}`. Each run a fresh process training the hidden-colour concept with the demo's "
             f"settings for {short} and {long} steps; per step: the difference of the two over {long - short} steps "
             "(train's own clock). Variants alternate within each round.", "",
             "| variant | ms per step, each round | median |", "|---|---|---|"]
    for name, values in per_step.items():
        lines.append(f"| {name} | {', '.join(f'{v:.1f}' for v in values)} | {statistics.median(values):.1f} |")
    lines += ["", f"With / without, per round: {', '.join(f'{r:.3f}' for r in ratios)}.", "",
              f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."]
    print_and_write(lines, RESULTS_DIR / "average_cost.md")


if __name__ == "__main__":
    main()
