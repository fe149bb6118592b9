"""A launch of `textual-inversion`, from start to exit, with and without the interpreter's teardown at the end.

Each run is a fresh process of a 1-step `train` of the bundled hidden-colour concept on miniworld (the demo's
settings), started as a user starts it: `textual-inversion ...` (cli.console: the exit handlers, then the process
ends) against `python -c "...cli.main()"` (the same command, ending the usual way, which frees every module's
objects first). Variants alternate within each round, the order reversed every other round. Also the seconds
from the run's last line of output to the process's end, which is where the two differ.

    python -m benchmarks.launch_exit [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import CONCEPTS_DIR, RESULTS_DIR, argument_parser, command, machine, print_and_write

USUAL_EXIT = "import sys\nfrom textual_inversion.cli import main\nsys.argv[0] = 'textual-inversion'\nmain()"


def launch(variant: str, threads: int, output_dir: Path) -> dict:
    """Seconds from start to exit of one 1-step `train`, and from its last line of output to exit."""
    arguments = ["train", "--model", "miniworld", "--images", str(CONCEPTS_DIR / "hidden-colour"), "--token", "<c>",
                 "--init-token", "circle", "--steps", "1", "--vectors", "6", "--lr", "0.1", "--batch-size", "4",
                 "--ema-decay", "0",
                 "--threads", str(threads), "--output-dir", str(output_dir)]
    if variant == "console":
        program = [shutil.which("textual-inversion") or sys.exit("textual-inversion is not on PATH: pip install -e .")]
    else:
        program = [sys.executable, "-c", USUAL_EXIT]
    started = time.perf_counter()
    last_output = started
    with subprocess.Popen(program + arguments, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:
        for _ in iter(process.stdout.readline, b""):
            last_output = time.perf_counter()
        code = process.wait()
    ended = time.perf_counter()
    if code:
        sys.exit(f"{variant}: train exited with {code}")
    return {"wall_s": ended - started, "after_output_s": ended - last_output}


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"  # the children inherit it
    variants = ["console", "usual exit"]
    rows = {variant: [] for variant in variants}
    with tempfile.TemporaryDirectory() as workdir:
        for round_number in range(args.rounds):
            for variant in variants if round_number % 2 == 0 else variants[::-1]:
                output_dir = Path(workdir) / f"run-{round_number}-{variant.replace(' ', '-')}"
                rows[variant].append(launch(variant, args.threads, output_dir))
    ratios = [a["wall_s"] / b["wall_s"] for a, b in zip(rows["console"], rows["usual exit"], strict=True)]
    lines = [f"# A 1-step `train`, launch to exit: with and without the interpreter's teardown "
             f"({machine('cpu', args.threads)})", "",
             f"Produced by `{command()}`. Each run a fresh process: `textual-inversion train --steps 1` on the "
             "hidden-colour concept (miniworld), started as the `textual-inversion` command (cli.console: exit "
             "handlers, then the process ends) or as `python -c` calling cli.main (the same, ending the usual way). "
             "Variants alternate within each round.", "",
             "| variant | seconds, launch to exit, each round | median | last output to exit, median |",
             "|---|---|---|---|"]
    for variant, measured in rows.items():
        walls = [row["wall_s"] for row in measured]
        lines.append(f"| {variant} | {', '.join(f'{w:.2f}' for w in walls)} | {statistics.median(walls):.2f} | "
                     f"{statistics.median(row['after_output_s'] for row in measured):.2f} |")
    lines += ["", f"console / usual exit, per round: {', '.join(f'{r:.3f}' for r in ratios)} "
              f"(median {statistics.median(ratios):.3f}).", "",
              f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."]
    print_and_write(lines, RESULTS_DIR / "launch_exit.md")


if __name__ == "__main__":
    main()
