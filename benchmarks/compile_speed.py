"""`train --compile` against eager on miniworld: what torch.compile of the UNet costs and saves on the CPU.

Each run is a fresh process, as a user's launch is, training the bundled hidden-colour concept with the
demo's settings. inductor keeps what it compiled in an on-disk cache, so the first compiled launch (a cold
cache, made empty for this benchmark) pays far more than later ones: it is timed on its own first, and the
measured runs then all find the cache warm. Two lengths per variant give the marginal seconds per step
(their difference over the extra steps: loading, set-up and compilation cancel) and the fixed cost (the
short run less its steps). Variants alternate within each round.

    python -m benchmarks.compile_speed [--steps 50 250] [--rounds 2] [--threads 1]
"""

from __future__ import annotations

import os
import statistics
import tempfile

from .common import RESULTS_DIR, command, machine, print_and_write
from .step_time import alternating_rounds, run_once, two_length_parser

VARIANTS = {"eager": {"compile": False}, "compiled": {"compile": True}}


def main() -> None:
    args = two_length_parser(__doc__).parse_args()
    short, long = args.steps
    with tempfile.TemporaryDirectory() as workdir:
        # The children inherit these at spawn: an empty inductor cache of this run's own, no hub access.
        os.environ.update(HF_HUB_OFFLINE="1", TORCHINDUCTOR_CACHE_DIR=f"{workdir}/inductor")
        cold = run_once(short, args.threads, workdir, VARIANTS["compiled"])
        print({"cold_compiled_wall_s": cold["wall_s"]}, flush=True)
        rows = alternating_rounds(VARIANTS, (short, long), args.rounds, args.threads, workdir)

    def median(variant: str, key: str) -> float:
        return statistics.median(row[key] for row in rows if row["variant"] == variant)

    ratio = median("compiled", "per_step_ms") / median("eager", "per_step_ms")
    extra = median("compiled", "fixed_s") - median("eager", "fixed_s")
    saved_per_step = (median("eager", "per_step_ms") - median("compiled", "per_step_ms")) / 1000
    lines = [f"# `train --compile` against eager on miniworld ({machine('cpu', args.threads)})", "",
             f"Produced by `{command()}`. Each run a fresh process training the hidden-colour concept with the "
             f"demo's settings for {short} and {long} steps; per step: the difference of the two over "
             f"{long - short} steps (train's own clock); fixed: the short run's seconds less its steps, "
             "compilation included, from a warm cache. Variants alternate within each round.", "",
             f"The first compiled launch, from an empty cache ({short} steps): {cold['train_s']:.0f} s of training, "
             f"{cold['wall_s']:.0f} s from launch to exit.", "",
             "| round | UNet | ms per step | fixed s | launch to exit, short / long |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['round']} | {row['variant']} | {row['per_step_ms']:.1f} | "
                     f"{row['fixed_s']:.1f} | {row['wall_short_s']:.0f} s / {row['wall_long_s']:.0f} s |")
    lines += ["", f"Compiled / eager per step (medians): {ratio:.2f}; from a warm cache compilation adds {extra:.0f} s "
                  "to each launch"
                  + (f", repaid after {extra / saved_per_step:.0f} steps." if saved_per_step > 0 else
                     "; it never repays on this machine."),
              "", f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."]
    print_and_write(lines, RESULTS_DIR / "compile_speed.md")


if __name__ == "__main__":
    main()
