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
from .step_time import alternating_rounds, two_length_parser

VARIANTS = {"with the average (the demo's)": {}, "without it": {"ema_decay": 0.0}}


def main() -> None:
    args = two_length_parser(__doc__).parse_args()
    short, long = args.steps
    os.environ["HF_HUB_OFFLINE"] = "1"  # the children inherit it
    with tempfile.TemporaryDirectory() as workdir:
        rows = alternating_rounds(VARIANTS, (short, long), args.rounds, args.threads, workdir)
    per_step = {name: [row["per_step_ms"] for row in rows if row["variant"] == name] for name in VARIANTS}
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
