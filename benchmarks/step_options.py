"""Our step with each speed option of the GPU path on and off, on a real-size model.

The options: diffusers' default attention (PyTorch's scaled_dot_product_attention, which picks flash or
memory-efficient kernels) against its classic processor (explicit matmul + softmax); the UNet in channels-last
layout (`train --channels-last`); TF32 matmuls (CUDA only; they change fp32 matmuls alone, so they are measured
with --precision fp32); torch.compile of the UNet (`train --compile`).

One pipeline in one process, built as benchmarks/real_scale.py builds it (random weights from the published
configs), and our step as real_scale's `OurStep` takes it. The reversible options are switched on and off in
alternating rounds, each against the defaults. Compiling cannot be undone, so it comes last, in place as
`train --compile` does it: its first steps, less as many compiled steps, are the compile cost; then compiled and eager steps
alternate in rounds (`torch.compiler.set_stance("force_eager")` runs the compiled UNet eagerly). On CUDA each
option's peak `torch.cuda.max_memory_allocated` over its steps is recorded too.

    python -m benchmarks.step_options [--model sd15] [--resolution 0] [--device cuda] [--precision fp16]
        [--options classic-attention channels-last tf32 compile] [--rounds 5] [--steps-per-round 5]
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

import torch

from .common import RESULTS_DIR, argument_parser, command, device_suffix, machine, print_and_write
from .real_scale import REAL_MODELS, TINY_MODELS, PhaseClock, mib, native_resolution, set_up, write_pictures

DEFAULTS = "defaults"
OPTIONS = ("classic-attention", "channels-last", "tf32", "compile")


def switches(pipe) -> dict:
    """Each reversible option's (switch on, switch off) for the pipeline's UNet."""
    from diffusers.models.attention_processor import AttnProcessor

    unet = pipe.unet
    default_processors = unet.attn_processors

    def tf32(on: bool):
        return lambda: setattr(torch.backends.cuda.matmul, "allow_tf32", on)

    return {"classic-attention": (lambda: unet.set_attn_processor(AttnProcessor()),
                                  lambda: unet.set_attn_processor(dict(default_processors))),
            "channels-last": (lambda: unet.to(memory_format=torch.channels_last),
                              lambda: unet.to(memory_format=torch.contiguous_format)),
            "tf32": (tf32(True), tf32(False))}


class Timer:
    """Times steps of our step (waiting for the GPU at each end) and tracks the peak GPU memory of a block."""

    def __init__(self, step, device: torch.device):
        self.step, self.device, self.clock = step, device, PhaseClock(device)
        self.clock.split = False  # whole steps only

    def steps(self, count: int) -> tuple[list[float], int | None]:
        """Seconds of each of `count` steps, and the peak bytes allocated on CUDA during them (None on the CPU)."""
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        seconds = []
        for _ in range(count):
            self.clock.start()
            self.step.step(self.clock)
            seconds.append(self.clock.stop())
        return seconds, torch.cuda.max_memory_allocated(self.device) if cuda else None


def alternate(timer: Timer, variants: dict, rounds: int, steps_per_round: int) -> dict[str, dict]:
    """`variants` (name: (on, off)) in alternating rounds; per variant its step seconds per round and peak memory."""
    results = {name: {"rounds": [], "peak": 0} for name in variants}
    for index in range(rounds):
        for name in list(variants) if index % 2 == 0 else list(variants)[::-1]:
            on, off = variants[name]
            on()
            seconds, peak = timer.steps(steps_per_round)
            off()
            results[name]["rounds"].append(statistics.median(seconds))
            results[name]["peak"] = max(results[name]["peak"], peak or 0)
    return results


def rows_against(results: dict[str, dict], baseline: str, section: str) -> list[dict]:
    """A row per variant but the baseline: median step seconds, and the rounds' ratios to the baseline."""
    base = results[baseline]["rounds"]
    rows = []
    for name, result in results.items():
        ratios = [seconds / reference for seconds, reference in zip(result["rounds"], base, strict=True)]
        rows.append({"section": section, "variant": name, "seconds": statistics.median(result["rounds"]),
                     "ratio": statistics.median(ratios), "range": (min(ratios), max(ratios)), "peak": result["peak"]})
    return rows


def measure(job: dict, options: list[str]) -> dict:
    """The step with each option against the defaults (and compiled against eager), in this process."""
    pipe, (step,), device = set_up(job, ("ours",))
    step.activate()
    timer = Timer(step, device)
    timer.steps(job["warmup"])
    on_off = switches(pipe)
    nothing = (lambda: None, lambda: None)
    variants = {DEFAULTS: nothing, **{name: on_off[name] for name in options if name != "compile"}}
    rows = rows_against(alternate(timer, variants, job["rounds"], job["steps_per_round"]), DEFAULTS, "options")
    compile_seconds = None
    if "compile" in options:
        pipe.unet.compile()  # in place, as `train --compile` does
        first, _ = timer.steps(job["warmup"])
        stances = {"eager": (lambda: torch.compiler.set_stance("force_eager"),
                             lambda: torch.compiler.set_stance("default")),
                   "compile": nothing}
        rows += rows_against(alternate(timer, stances, job["rounds"], job["steps_per_round"]), "eager", "compile")
        compile_seconds = sum(first) - len(first) * rows[-1]["seconds"]  # the warm-up less as many compiled steps
    return {"rows": rows, "compile_seconds": compile_seconds}


def report(args, resolution: int, result: dict, load: tuple[float, float]) -> list[str]:
    precision = {"fp32": "fp32", "fp16": "fp16 weights, autocast", "bf16": "bf16 weights, autocast"}[args.precision]
    lines = [f"# Our step with the GPU path's options on and off ({args.model}, {resolution} px, "
             f"{machine(args.device, args.threads)}, {precision})", "",
             f"Produced by `{command()}`. Random weights, batch {args.batch_size}. Each option is switched on for "
             f"{args.steps_per_round} steps and off again, alternating with the defaults over {args.rounds} rounds "
             f"after {args.warmup} warm-up steps; step: median of the rounds' median seconds; ratio: the median of "
             "the rounds' option / defaults (range in brackets). Compiled and eager steps alternate the same way "
             "after the compile. Peak: torch.cuda.max_memory_allocated over the option's steps (MiB).", "",
             "| option | step s | against | ratio | peak MiB |", "|---|---|---|---|---|"]
    for row in result["rows"]:
        against = DEFAULTS if row["section"] == "options" else "eager"
        lines.append(f"| {row['variant']} | {row['seconds']:.4f} | {against} | {row['ratio']:.3f} "
                     f"({row['range'][0]:.3f} to {row['range'][1]:.3f}) | {mib(row['peak'] or None)} |")
    if result["compile_seconds"] is not None:
        lines += ["", f"Compile cost: the first {args.warmup} compiled steps took {result['compile_seconds']:.1f} s "
                  "more than as many compiled steps take once compiled."]
    lines += ["", f"Load average (1 min) before: {load[0]:.1f}, after: {load[1]:.1f}, on {os.cpu_count()} cores."]
    return lines


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--model", default="sd15", choices=[*REAL_MODELS, *TINY_MODELS])
    parser.add_argument("--resolution", type=int, default=0, help="picture size in pixels (0: the model's native one)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--options", nargs="+", default=["classic-attention", "channels-last", "compile"],
                        choices=OPTIONS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-round", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (and the first compiled "
                        "steps, which pay the compile)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda", help="cuda[:N] or cpu")
    parser.add_argument("--precision", default="fp16", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--output", type=Path, default=None,
                        help="results file (default benchmarks/results/step_options_<model>_<precision>[_cuda].md)")
    args = parser.parse_args()
    if "tf32" in args.options and not args.device.startswith("cuda"):
        parser.error("--options tf32 needs --device cuda (TF32 is a CUDA matmul mode)")
    if args.precision == "fp16" and not args.device.startswith("cuda"):
        parser.error("--precision fp16 needs --device cuda (use bf16 or fp32 on the CPU)")
    resolution = args.resolution or native_resolution(args.model)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as workdir:
        job = {"model": args.model, "workdir": workdir, "resolution": resolution, "batch_size": args.batch_size,
               "images": str(write_pictures(Path(workdir) / "pictures", resolution)), "device": args.device,
               "precision": args.precision, "threads": args.threads, "seed": 0, "warmup": args.warmup,
               "rounds": args.rounds, "steps_per_round": args.steps_per_round}
        result = measure(job, args.options)
    output = args.output or RESULTS_DIR / f"step_options_{args.model}_{args.precision}{device_suffix(args.device)}.md"
    print_and_write(report(args, resolution, result, (load_before, os.getloadavg()[0])), output)


if __name__ == "__main__":
    main()
