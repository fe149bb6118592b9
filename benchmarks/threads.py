"""How many CPU threads a training should use: alone, and beside a second training on the same cores.

Times the same short `textual-inversion train` (demo concept and settings) with each thread setting,
first alone, then while another training runs the whole time on the same machine (the second job uses
torch's own default). Settings alternate within each round, so a drift of the host hits all of them.

    python -m benchmarks.threads [--steps 100] [--rounds 2] [--settings 1 2 2-passive default]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import CONCEPTS_DIR, RESULTS_DIR, argument_parser, command, print_and_write

# A setting is --threads N, or "default" (no --threads: the tool's default), or N-passive (OpenMP threads that
# sleep instead of spinning while they wait, OMP_WAIT_POLICY=PASSIVE).
SETTINGS = ("default", "1", "2", "2-passive")


def train_command(steps: int, output: Path, setting: str) -> tuple[list[str], dict]:
    args = [sys.executable, "-m", "textual_inversion.cli", "train", "--images", str(CONCEPTS_DIR / "hidden-colour"),
            "--token", "<teal-thing>", "--init-token", "circle", "--vectors", "6", "--lr", "0.05",
            "--batch-size", "4", "--ema-decay", "0", "--steps", str(steps), "--checkpoint-every", "0",
            "--output-dir", str(output),
            "--overwrite"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    threads, _, passive = setting.partition("-")
    if threads != "default":
        args += ["--threads", threads]
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return args, env


def timed(steps: int, workdir: Path, setting: str) -> float:
    """Wall seconds of one training run, launch to exit."""
    args, env = train_command(steps, workdir / f"run-{setting}", setting)
    started = time.monotonic()
    subprocess.run(args, env=env, check=True, capture_output=True)
    return time.monotonic() - started


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    args = parser.parse_args()
    rows = {("alone", s): [] for s in args.settings} | {("beside a second training", s): [] for s in args.settings}
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        for _ in range(args.rounds):
            for setting in args.settings:
                rows[("alone", setting)].append(timed(args.steps, workdir, setting))
                print(f"alone, {setting}: {rows[('alone', setting)][-1]:.1f} s", flush=True)
        # The second job: a long training with torch's default threads, restarted if it ends early.
        # It takes every core, as a torch program does by default.
        load_args, load_env = train_command(100_000, workdir / "second-job", str(os.cpu_count()))
        second = subprocess.Popen(load_args, env=load_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(20)  # past its start-up, into its steps
            for _ in range(args.rounds):
                for setting in args.settings:
                    rows[("beside a second training", setting)].append(timed(args.steps, workdir, setting))
                    print(f"loaded, {setting}: {rows[('beside a second training', setting)][-1]:.1f} s", flush=True)
        finally:
            second.terminate()
            second.wait()
    lines = [f"# Threads: a {args.steps}-step training alone and beside a second training (CPU, {os.cpu_count()} cores)",
             "", f"Produced by `{command()}`; launch-to-exit seconds, median of {args.rounds} alternating rounds. "
             "The second training uses every core (torch's default). `default` is the tool's default "
             "(`--threads` not given); `2-passive` is 2 threads with OMP_WAIT_POLICY=PASSIVE.", "",
             "| setting | alone | beside a second training | slowdown |", "|---|---|---|---|"]
    for setting in args.settings:
        alone = statistics.median(rows[("alone", setting)])
        loaded = statistics.median(rows[("beside a second training", setting)])
        lines.append(f"| {setting} | {alone:.1f} s | {loaded:.1f} s | {loaded / alone:.1f}x |")
    print_and_write(lines, RESULTS_DIR / "threads.md")


if __name__ == "__main__":
    main()
