"""What `train --refine-latents` costs at real size: decoder inversion through a full-size Stable Diffusion VAE.

    python -m benchmarks.refine_cost [--models sd15 sdxl] [--resolution 256] [--steps 2] [--threads 2]
        [--device cpu] [--results-suffix _X]

The VAE is built with random weights from the published config in benchmarks/real_scale_configs/ (SD 1.x and 2.x
share one architecture; SDXL's differs in its scaling factor only, so its figures are a check). A refine step is a
decoder forward and backward on one picture's latent (`data.decoder_inversion`, the code `train` runs); the
encoder's pass is what caching the picture costs without it, timed beside it on the same picture in one process.
Projected: the default 300 steps for each of a run's views (5 pictures, each flipped: 10); the training step at the
same size is benchmarks/real_scale.py's to compare with. Peak memory: the process's peak RSS (VmHWM) on the CPU,
`torch.cuda.max_memory_allocated` on CUDA, after the refine steps.
"""

from __future__ import annotations

import json
import statistics

import torch

from .common import RESULTS_DIR, argument_parser, command, machine, print_and_write
from .real_scale import CONFIGS_DIR, PhaseClock, mib, read_status, reset_peak

VIEWS = 10  # 5 pictures, each also flipped: the views of a typical run's cache
DEFAULT_REFINE = 300  # the steps shown on miniworld (docs/subjects.md)


def timed(run, device: torch.device, repeats: int) -> float:
    """Median seconds of `repeats` calls of `run` (after one untimed call), waiting for the GPU's queue on CUDA."""
    clock = PhaseClock(device)
    clock.split = False  # one span per call, no phases
    run()
    seconds = []
    for _ in range(repeats):
        clock.start()
        run()
        seconds.append(clock.stop())
    return statistics.median(seconds)


def measure(name: str, resolution: int, steps: int, device: torch.device) -> dict:
    from diffusers import AutoencoderKL

    from textual_inversion.data import decoder_inversion

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak()  # the previous model's peak is not this one's
    torch.manual_seed(0)
    vae = AutoencoderKL.from_config(json.loads((CONFIGS_DIR / name / "vae.json").read_text())).to(device).eval()
    vae.requires_grad_(False)
    pixels = torch.rand(1, 3, resolution, resolution, device=device) * 2 - 1
    with torch.no_grad():
        start = vae.encode(pixels).latent_dist.mean
    encode = timed(lambda: vae.encode(pixels).latent_dist.mean, device, steps)
    # one call of decoder_inversion with `steps` steps, after an untimed one, per step
    refine = timed(lambda: decoder_inversion(vae, pixels, start, steps), device, 1) / steps
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else read_status("VmHWM")
    return {"model": name, "resolution": resolution, "encode": encode, "refine_step": refine, "peak": peak}


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=["sd15", "sdxl"], choices=("sd15", "sd21", "sdxl"))
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2, help="refine steps timed (and encoder passes)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--results-suffix", default="", help="write refine_cost<suffix>.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [measure(name, args.resolution, args.steps, device) for name in args.models]
    lines = [f"# `--refine-latents` at real size ({machine(args.device, args.threads)}, fp32, {args.resolution} px)", "",
             f"Produced by `{command()}`. Seconds per picture view; projected: {DEFAULT_REFINE} steps for each of "
             f"{VIEWS} views (5 pictures, flipped). Peak memory after the refine steps (the process's, VAE included).",
             "", "| VAE | encoder pass | refine step | refine / encode | projected refine | peak memory |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        projected = DEFAULT_REFINE * VIEWS * row["refine_step"]
        lines.append(f"| {row['model']} | {row['encode']:.2f} s | {row['refine_step']:.2f} s | "
                     f"{row['refine_step'] / row['encode']:.1f}x | {projected / 60:.0f} min | {mib(row['peak'])} MiB |")
    print_and_write(lines, RESULTS_DIR / f"refine_cost{args.results_suffix}.md")


if __name__ == "__main__":
    main()
