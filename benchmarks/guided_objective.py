"""Textual inversion trained on the guided prediction at the noisiest steps: a first look, on the runs the demo's
settings miss.

benchmarks/results/loss_against_fidelity.md found that the runs drawing the teal heart and ring blue have the
lower denoising loss, most of it at the noisiest timesteps, and draw more blue as the guidance scale grows. Here
the loss of the samples with t >= --from-t is taken on the classifier-free-guided prediction instead, as the
sampler will form it: uncond + w (cond - uncond), the unconditional prediction from the empty prompt (miniworld
was trained with empty captions for guidance) and held fixed, w the evaluation's guidance scale; the other
samples keep the plain loss. Everything else is the concept sweep's ti-average (the demo's settings). The
objective is patched into `train` in this process only; it is not an option of the tool.

    python -m benchmarks.guided_objective [--runs teal-heart:0 teal-cross:1 ...] [--from-t 750] [--guidance 4]
                                          [--time-stages 4] [--plain]

--time-stages N gives each of N equal stages of the schedule its own vectors (`train --time-stages`), so that the
noisiest stage's may learn the smaller offset the guided loss asks for there; --plain keeps the plain loss (the
control for --time-stages).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .common import RESULTS_DIR, argument_parser, command, print_and_write
from .concept_set import SWEEP_RESULTS, concept_kind, find_concept, measured_on_packaged_model
from .concept_sweep import METHODS, done, train_and_score

# The two runs the demo's settings miss on the concepts the conditioning ceiling draws, then two they learn.
DEFAULT_RUNS = ["teal-heart:0", "teal-cross:1", "teal-circle:0", "teal-triangle:0"]


def guided_loss_class(from_t: int, guidance: float):
    """DenoisingLoss whose samples with t >= `from_t` are scored on the guided prediction (UNet families)."""
    import torch

    from textual_inversion.objective import (
        DenoisingLoss,
        encode_conditioning,
        noised_and_target,
        weighted_mean_error,
    )

    class GuidedDenoisingLoss(DenoisingLoss):
        def forward(self, batch):
            device = self.denoiser.device
            conditioning = encode_conditioning(self.pipe, batch.prompts, batch.sizes, device)
            latents, noise = batch.latents.to(device), batch.noise.to(device)
            timesteps = batch.timesteps.to(device)
            noisy, target = noised_and_target(self.noise_scheduler, latents, noise, timesteps)
            prediction = self.denoiser(noisy, timesteps, **conditioning).sample
            noisiest = (timesteps >= from_t).view(-1, 1, 1, 1)
            if noisiest.any():
                with torch.no_grad():
                    empty = encode_conditioning(self.pipe, [""] * len(batch.prompts), batch.sizes, device)
                    unconditional = self.denoiser(noisy, timesteps, **empty).sample
                guided = unconditional + guidance * (prediction - unconditional)
                prediction = torch.where(noisiest, guided, prediction)
            return weighted_mean_error(prediction, target, None)

    return GuidedDenoisingLoss


def sweep_row(concept: str, seed: int) -> dict | None:
    """The concept sweep's ti-average row for this run (3200 passes), to compare with."""
    wanted = (concept, "ti-average", seed, 3200)
    return next((r for r in done(SWEEP_RESULTS)
                 if (r.get("concept"), r.get("condition"), r.get("seed"), r.get("passes")) == wanted), None)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, metavar="CONCEPT:SEED")
    parser.add_argument("--from-t", type=int, default=750, help="the guided loss for samples with t >= this")
    parser.add_argument("--guidance", type=float, default=4.0, help="w of the guided prediction (the evaluation's)")
    parser.add_argument("--time-stages", type=int, default=0, help="train --time-stages (0: one set of vectors)")
    parser.add_argument("--plain", action="store_true", help="the plain loss everywhere (a control)")
    parser.add_argument("--workdir", default="runs/concept-sweep")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results-suffix", default="")
    args = parser.parse_args()

    import textual_inversion.training as training
    from textual_inversion.models import use_threads

    use_threads(args.threads)
    measured_on_packaged_model(SWEEP_RESULTS)  # before any training: sweep_row compares with its rows
    if not args.plain:
        training.DenoisingLoss = guided_loss_class(args.from_t, args.guidance)
    method = "ti-average-guided"
    METHODS[method] = {**METHODS["ti-average"], **({"time_stages": args.time_stages} if args.time_stages else {})}
    objective = ("the plain loss" if args.plain else f"the loss of every sample with t >= {args.from_t} taken on "
                 f"uncond + {args.guidance:g} x (cond - uncond), the unconditional prediction from the empty prompt "
                 "and held fixed")
    stages = f", --time-stages {args.time_stages}" if args.time_stages else ""
    lines = []
    with tempfile.TemporaryDirectory() as scratch:
        for run in args.runs:
            concept, seed = run.split(":")
            folder, spec = find_concept(concept, Path(args.workdir) / "concepts")
            kind = concept_kind(concept)
            [row] = train_and_score(method, concept, kind, folder, spec, int(seed), [3200], [3200], 4,
                                    Path(scratch) / f"{concept}-{seed}", args.threads)
            plain = sweep_row(concept, int(seed))
            before = f"{plain['fidelity']:.2f} / {plain['editability']:.2f}" if plain else "-"
            colours = ", ".join(f"{c} {n}" for c, n in sorted(row["fidelity_reads"].get("colour", {}).items(),
                                                                key=lambda item: -item[1]))
            lines.append(f"| {concept} | {seed} | {row['fidelity']:.2f} / {row['editability']:.2f} | {colours} | "
                         f"{before} | {row['train_seconds']:.0f} |")
            print(lines[-1], flush=True)
    print_and_write([
        "# Textual inversion " + ("with the plain loss, the control for the guided objective" if args.plain else
                                  "on the guided prediction at the noisiest steps") + " (CPU)", "",
        f"Produced by `{command()}`. ti-average (the demo's settings: 6 vectors, lr 0.1, --ema-decay 0.99, batch 4, "
        f"3200 passes{stages}) with {objective}; scored as the concept sweep scores (4 images per prompt). Beside it, the sweep's ti-average run of the same concept and seed "
        f"(benchmarks/results/{SWEEP_RESULTS.name}).", "",
        "| concept | seed | this objective: fidelity / editability | colours read (fidelity images) | "
        "ti-average | training s |", "|---|---|---|---|---|---|", *lines, "",
        f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."],
        RESULTS_DIR / f"guided_objective{args.results_suffix}.md")


if __name__ == "__main__":
    main()
