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
import time

from .common import (
    CONCEPTS_DIR,
    RESULTS_DIR,
    argument_parser,
    command,
    in_fresh_process,
    machine,
    print_and_write,
)


def train_seconds(steps: int, threads: int, output_dir: str, options: dict) -> dict:
    """One training of the bundled hidden-colour concept with the demo's settings and `options` over them; train's
    own seconds and its steps."""
    from textual_inversion import TrainConfig, train
    from textual_inversion.demo import DEMO_TRAINING

    result = train(TrainConfig.from_values(dict(
        model="miniworld", images=str(CONCEPTS_DIR / "hidden-colour"), token="<c>", init_token="circle",
        steps=steps, seed=0, threads=threads, output_dir=output_dir, **{**DEMO_TRAINING, **options})))
    return {"train_s": result.seconds, "steps": result.steps}


def run_once(steps: int, threads: int, workdir: str, options: dict) -> dict:
    """train_seconds in a fresh process, its run folder in `workdir`; with the wall time from launch to exit."""
    started = time.perf_counter()
    row = in_fresh_process(train_seconds, steps, threads, f"{workdir}/run-{time.monotonic_ns()}", options)
    return {**row, "wall_s": time.perf_counter() - started}


def two_length_parser(description: str):
    """The options of a benchmark that times each variant's training at two lengths, in alternating rounds."""
    parser = argument_parser(description)
    parser.add_argument("--steps", nargs=2, type=int, default=[50, 250], metavar=("SHORT", "LONG"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training (the demo's: 1)")
    return parser


def main() -> None:
    args = two_length_parser(__doc__).parse_args()
    short, long = args.steps
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        # The children inherit these at spawn: an empty inductor cache of this run's own, no hub access.
        os.environ.update(HF_HUB_OFFLINE="1", TORCHINDUCTOR_CACHE_DIR=f"{workdir}/inductor")
        cold = run_once(short, args.threads, workdir, {"compile": True})
        print({"cold_compiled_wall_s": cold["wall_s"]}, flush=True)
        for round_index in range(args.rounds):
            order = [False, True] if round_index % 2 == 0 else [True, False]
            for compile_unet in order:
                runs = {steps: run_once(steps, args.threads, workdir, {"compile": compile_unet}) for steps in (short, long)}
                per_step = (runs[long]["train_s"] - runs[short]["train_s"]) / (long - short)
                rows.append({"round": round_index + 1, "compile": compile_unet, "per_step_ms": 1000 * per_step,
                             "fixed_s": runs[short]["train_s"] - short * per_step,
                             "wall_short_s": runs[short]["wall_s"], "wall_long_s": runs[long]["wall_s"]})
                print(rows[-1], flush=True)

    def median(compile_unet: bool, key: str) -> float:
        return statistics.median(row[key] for row in rows if row["compile"] == compile_unet)

    ratio = median(True, "per_step_ms") / median(False, "per_step_ms")
    extra = median(True, "fixed_s") - median(False, "fixed_s")
    saved_per_step = (median(False, "per_step_ms") - median(True, "per_step_ms")) / 1000
    lines = [f"# `train --compile` against eager on miniworld ({machine('cpu', args.threads)})", "",
             f"Produced by `{command()}`. Each run a fresh process training the hidden-colour concept with the "
             f"demo's settings for {short} and {long} steps; per step: the difference of the two over "
             f"{long - short} steps (train's own clock); fixed: the short run's seconds less its steps, "
             "compilation included, from a warm cache. Variants alternate within each round.", "",
             f"The first compiled launch, from an empty cache ({short} steps): {cold['train_s']:.0f} s of training, "
             f"{cold['wall_s']:.0f} s from launch to exit.", "",
             "| round | UNet | ms per step | fixed s | launch to exit, short / long |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['round']} | {'compiled' if row['compile'] else 'eager'} | {row['per_step_ms']:.1f} | "
                     f"{row['fixed_s']:.1f} | {row['wall_short_s']:.0f} s / {row['wall_long_s']:.0f} s |")
    lines += ["", f"Compiled / eager per step (medians): {ratio:.2f}; from a warm cache compilation adds {extra:.0f} s "
                  "to each launch"
                  + (f", repaid after {extra / saved_per_step:.0f} steps." if saved_per_step > 0 else
                     "; it never repays on this machine."),
              "", f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."]
    print_and_write(lines, RESULTS_DIR / "compile_speed.md")


if __name__ == "__main__":
    main()
