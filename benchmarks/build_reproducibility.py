"""Is the miniworld build bit-reproducible on the CPU, and what changes its digits?

    python -m benchmarks.build_reproducibility [--steps 30] [--cache-size 512]

Runs short continuations of the shipped model (`textual_inversion.miniworld.build --continue-from`, the twins
recipe's settings: seed 1, pattern twins 0.25 at weight 0.08) in fresh processes, one after another: twice at 2
threads, once at 1 thread, and once at 2 threads saving every 10 steps. Each output's UNet and text encoder are
compared with the first run's, tensor by tensor, as saved. Writes benchmarks/results/build_reproducibility.md.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import RESULTS_DIR, ROOT, argument_parser, command, print_and_write

SHIPPED = ROOT / "src" / "textual_inversion" / "miniworld" / "model"
RECIPE = ["--seed", "1", "--lr", "3e-4", "--warmup", "10", "--pattern-twins", "0.25", "--twin-weight", "0.08"]
VARIANTS = {  # name: the build's options beyond RECIPE
    "2 threads": ["--threads", "2"],
    "2 threads, again": ["--threads", "2"],
    "1 thread": ["--threads", "1"],
    "2 threads, --save-every 10": ["--threads", "2", "--save-every", "10"],
}
PARTS = ("unet", "text_encoder")


def build(options: list[str], output: Path, steps: int, cache_size: int) -> float:
    """One continuation in a fresh process; its wall seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "textual_inversion.miniworld.build", "--continue-from", str(SHIPPED),
                    "--output", str(output), "--unet-steps", str(steps), "--cache-size", str(cache_size),
                    *RECIPE, *options], check=True, capture_output=True)
    return time.perf_counter() - started


def differences(first: Path, other: Path) -> dict[str, tuple[int, int, float]]:
    """Per part: (tensors that differ, elements that differ, largest absolute difference), as saved."""
    from safetensors.torch import load_file

    found = {}
    for part in PARTS:
        name = next((first / part).glob("*.safetensors")).name
        a, b = load_file(first / part / name), load_file(other / part / name)
        tensors = elements = 0
        largest = 0.0
        for key, value in a.items():
            delta = (value.float() - b[key].float()).abs()
            if delta.max() > 0:
                tensors += 1
                elements += int((delta > 0).sum())
                largest = max(largest, float(delta.max()))
        found[part] = (tensors, elements, largest)
    return found


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--cache-size", type=int, default=512)
    args = parser.parse_args()
    lines = [f"# The miniworld build run again: bit for bit? ({args.steps}-step continuations of the shipped model)", "",
             f"Produced by `{command()}`; each build a fresh process, one after another, alone. Options beyond the "
             f"variant's: `{' '.join(RECIPE)} --cache-size {args.cache_size}`. Each output is compared with the first "
             "run's as saved: tensors that differ, elements that differ, the largest difference.", "",
             "| variant | wall | UNet | text encoder |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as workdir:
        outputs = {}
        for name, options in VARIANTS.items():
            outputs[name] = Path(workdir) / name.replace(" ", "_").replace(",", "")
            seconds = build(options, outputs[name], args.steps, args.cache_size)
            print(f"{name}: {seconds:.0f} s", flush=True)
            first = outputs[next(iter(VARIANTS))]
            found = differences(first, outputs[name])
            cells = [f"{t} tensors, {e} elements, max {d:.2g}" if t else "identical" for t, e, d in found.values()]
            lines.append(f"| {name} | {seconds:.0f} s | {cells[0]} | {cells[1]} |")
    print_and_write(lines, RESULTS_DIR / "build_reproducibility.md")


if __name__ == "__main__":
    main()
