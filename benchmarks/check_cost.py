"""What `--stop-when-learned`'s checks cost a run: the seconds its learned checks take out of the training's.

Trains the bundled hidden-colour concept with the two stop-rule commands of docs/speed.md (textual inversion at lr
0.2 with stratified timesteps, and pivotal tuning) on each seed, timing every check (drawing its 8 images and the
judge's reading) inside train's own clock. Issue 24's 20 seconds from launch to exit leave about 14 s for the
training after start-up, so the checks' share says how much of the gap a cheaper check could close.

    python -m benchmarks.check_cost [--seeds 0 1 2] [--threads 2]
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

# The stop rule until 2026-12-06 (share 0.75, two checks in a row), which check_cost.md was measured with.
STOPPING = {"vectors": 6, "batch_size": 4, "stop_when_learned": True, "learned_share": 0.75, "learned_passes": 2,
            "steps": 300}
SETTINGS = {  # docs/speed.md's two commands
    "textual inversion": {**STOPPING, "lr": 0.2, "timesteps": "stratified"},
    "pivotal tuning": {**STOPPING, "method": "pivotal", "lr": 0.05, "lora_lr": 1e-3, "rank": 8},
}


def timed_run(settings: dict, seed: int, threads: int, output: Path) -> dict:
    """One run with every learned check timed: its steps, train's seconds and the checks' seconds and shares."""
    from textual_inversion import TrainConfig, training

    folder, spec = bundled_concept("hidden-colour")
    checks = []
    untimed = training.learned_share

    def learned_share(pipe, check) -> float:
        started = time.perf_counter()
        share = untimed(pipe, check)
        checks.append((time.perf_counter() - started, share))
        return share

    training.learned_share = learned_share
    try:
        result = training.train(TrainConfig.from_values(with_former_defaults(dict(
            model="miniworld", images=str(folder), token=spec.token, init_token=spec.init_word, seed=seed,
            threads=threads, checkpoint_every=0, output_dir=str(output), **settings))))
    finally:
        training.learned_share = untimed
    return {"steps": result.steps, "seconds": result.seconds, "checks": checks}


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    lines = [f"# What the stop rule's checks cost a run ({machine('cpu', args.threads)})", "",
             f"Produced by `{command()}`. The hidden-colour concept with docs/speed.md's two stop-rule commands "
             "(6 vectors, batch 4, at most 300 steps; textual inversion at lr 0.2 with stratified timesteps, pivotal "
             "tuning at lr 0.05 with a rank-8 LoRA at 1e-3); a check every 25 steps draws 8 images (DPM++, 10 steps, "
             "guidance 4) and the judge reads them. Seconds: train's own clock (loading to writing); the checks' "
             "are inside it.", "",
             "| setting | seed | stopped at step | training s | checks | checks s | share of the training | "
             "s a check (median) | shares read |", "|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as workdir:
        for name, settings in SETTINGS.items():
            for seed in args.seeds:
                run = timed_run(settings, seed, args.threads, Path(workdir) / f"{name}-{seed}")
                spent = [seconds for seconds, _ in run["checks"]]
                lines.append(
                    f"| {name} | {seed} | {run['steps']} | {run['seconds']:.1f} | {len(spent)} | {sum(spent):.1f} | "
                    f"{sum(spent) / run['seconds']:.0%} | {statistics.median(spent):.2f} | "
                    f"{', '.join(f'{share:.2f}' for _, share in run['checks'])} |")
                print(lines[-1], flush=True)
    lines += ["", f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."]
    print_and_write(lines, RESULTS_DIR / "check_cost.md")


if __name__ == "__main__":
    main()
