"""Images per second of `generate` with learned concepts loaded, against plain diffusers, same run.

Both pipelines are loaded first; then the two are timed in alternation (same scheduler, steps,
guidance and seeds), and each round's speed ratio is printed (median and range) and written to
benchmarks/results/generation_speed.md. Both wall time and the process's CPU time are timed: on a
shared host the wall clock drifts with other tenants' load, while CPU time counts the work done.

    python -m benchmarks.generation_speed [--model miniworld] [--steps 25] [--images 8] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from .common import RESULTS_DIR, argument_parser, command, print_and_write


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--model", default="miniworld")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from diffusers import StableDiffusionPipeline

    from textual_inversion import GenerateConfig, generate, load_concepts
    from textual_inversion.formats import Embedding, write_embedding
    from textual_inversion.models import load_pipeline, resolve_model_path

    with tempfile.TemporaryDirectory() as workdir:
        ours = load_pipeline(args.model)
        width = ours.text_encoder.get_input_embeddings().weight.shape[-1]
        concepts = [str(write_embedding(Embedding(f"<c{i}>", {"text_encoder": torch.randn(2, width) * 0.01}),
                                        Path(workdir) / f"c{i}.safetensors")) for i in range(2)]
        load_concepts(ours, concepts)
        plain = StableDiffusionPipeline.from_pretrained(resolve_model_path(args.model), safety_checker=None)
        plain.set_progress_bar_config(disable=True)
        config = GenerateConfig(model=args.model, concept=concepts, prompt="a <c0> next to a <c1>", steps=args.steps,
                                num_images=args.images, guidance=4.0, device="cpu", output_dir=str(Path(workdir) / "out"),
                                overwrite=True)

        def run_ours():
            generate(config, pipe=ours)

        def run_plain():
            for index in range(args.images):
                plain("a circle next to a square", num_inference_steps=args.steps, guidance_scale=4.0,
                      generator=torch.Generator().manual_seed(index)).images[0].save(Path(workdir) / f"p{index}.png")

        run_ours()  # warm-up, both
        run_plain()
        clocks = {"wall": time.perf_counter, "CPU": time.process_time}
        timings = {(name, clock): [] for name in ("ours", "plain") for clock in clocks}
        for _ in range(args.rounds):
            for name, function in (("ours", run_ours), ("plain", run_plain)):
                started = {clock: read() for clock, read in clocks.items()}
                function()
                for clock, read in clocks.items():
                    timings[name, clock].append(read() - started[clock])
    threads = torch.get_num_threads()
    lines = [f"# Generation speed with concepts loaded ({args.model}, CPU, {threads} threads, {args.steps} steps, "
             f"{args.images} images, {args.rounds} alternating rounds)", "",
             f"Produced by `{command()}`.", "",
             "| clock | `generate` with 2 concepts, images/s (median) | plain diffusers, images/s (median) "
             "| ratio ours / plain per round: median | range |", "|---|---|---|---|---|"]
    for clock in clocks:
        ours, plain = timings["ours", clock], timings["plain", clock]
        # Each round times the two back to back, so a round's ratio shares that moment's machine speed; the
        # median of those ratios is steadier than the ratio of medians when the host's speed drifts.
        ratios = sorted(p / o for o, p in zip(ours, plain, strict=True))
        lines.append(f"| {clock} | {args.images / statistics.median(ours):.2f} | "
                     f"{args.images / statistics.median(plain):.2f} | {statistics.median(ratios):.3f} | "
                     f"{ratios[0]:.3f}-{ratios[-1]:.3f} |")
    print_and_write(lines, RESULTS_DIR / "generation_speed.md")


if __name__ == "__main__":
    main()
