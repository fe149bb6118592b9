"""Seconds per training step of variants of the demo's training, each a fresh process as a user's launch is.

Two run lengths per variant give the marginal seconds per step (their difference over the extra steps: loading,
set-up and compilation cancel) and the fixed cost (the short run less its steps). Variants alternate within each
round, the order reversed every other round, so that a drift of the machine's speed falls on all of them.
Shared by the benchmarks that compare such variants (compile_speed, average_cost).
"""

from __future__ import annotations

import time

from .common import CONCEPTS_DIR, argument_parser, in_fresh_process, with_former_defaults


def train_seconds(steps: int, threads: int, output_dir: str, options: dict) -> dict:
    """One training of the bundled hidden-colour concept with the demo's settings and `options` over them; train's
    own seconds and its steps."""
    from textual_inversion import TrainConfig, train
    from textual_inversion.demo import DEMO_TRAINING

    result = train(TrainConfig.from_values(with_former_defaults(dict(
        model="miniworld", images=str(CONCEPTS_DIR / "hidden-colour"), token="<c>", init_token="circle",
        steps=steps, seed=0, threads=threads, output_dir=output_dir, **{**DEMO_TRAINING, **options}))))
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


def alternating_rounds(variants: dict[str, dict], steps: tuple[int, int], rounds: int, threads: int,
                       workdir: str) -> list[dict]:
    """Each variant (name: train options over the demo's) trained at both lengths in every round; one row per round
    and variant: round, variant, per_step_ms, fixed_s, wall_short_s, wall_long_s."""
    short, long = steps
    rows = []
    for round_index in range(rounds):
        names = list(variants) if round_index % 2 == 0 else list(reversed(variants))
        for name in names:
            runs = {length: run_once(length, threads, workdir, variants[name]) for length in (short, long)}
            per_step = (runs[long]["train_s"] - runs[short]["train_s"]) / (long - short)
            rows.append({"round": round_index + 1, "variant": name, "per_step_ms": 1000 * per_step,
                         "fixed_s": runs[short]["train_s"] - short * per_step,
                         "wall_short_s": runs[short]["wall_s"], "wall_long_s": runs[long]["wall_s"]})
            print(rows[-1], flush=True)
    return rows
