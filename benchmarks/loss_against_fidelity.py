"""Does the training objective rank textual-inversion runs the way the judge does?

The concept sweep's runs on one concept end with different vectors, some drawing the concept and some not (the
teal heart drawn blue). If the denoising loss on the concept's own pictures told them apart, a run could keep its
best checkpoint, or restarts could be ranked, with no judge. For every textual-inversion run folder of a concept
under the sweep's workdir, this loads the saved vectors into a fresh miniworld and measures the loss on the same
fixed batches for every run (the concept's pictures and captions, the same noise and timesteps: common random
numbers, so the differences are the vectors'), overall and per quarter of the noise schedule, beside the fidelity
the sweep recorded for that run. --guidance-runs also scores chosen runs' fidelity at several guidance scales
(the evaluation's prompts and seeds, the judge's colour readings), to tell a token that draws the concept only
weakly from one that draws something else.

    python -m benchmarks.loss_against_fidelity [--concepts teal-heart ...] [--batches 40]
                                               [--guidance-runs teal-heart/ti-average-seed0 ...] [--guidance 1 2 4 7]
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path

from .common import RESULTS_DIR, argument_parser, command, machine, print_and_write, with_former_defaults
from .concept_set import SWEEP_RESULTS, find_concept, measured_on_packaged_model
from .concept_sweep import METHODS

QUARTERS = ((0, 250), (250, 500), (500, 750), (750, 1000))
HIDDEN_COLOURS = ("teal-circle", "teal-square", "teal-triangle", "teal-heart", "teal-cross", "teal-ring")


def is_textual_inversion(condition: str) -> bool:
    """A run whose learned_embeds.safetensors is all it learned: not the per-layer or per-stage variants, whose
    standard file holds only the mean of their sets."""
    settings = METHODS.get(condition, {})
    return ((condition == "textual-inversion" or condition.startswith("ti-"))
            and not settings.get("per_layer") and not settings.get("time_stages"))


def recorded_score(rows: list[dict], concept: str, condition: str, seed: int) -> dict | None:
    """The sweep's row for this run at its largest budget (what its saved vectors are), or None."""
    mine = [r for r in rows if r.get("concept") == concept and r.get("condition") == condition and r.get("seed") == seed]
    return max(mine, key=lambda r: r["passes"]) if mine else None


def pipeline_with(embedding: Path):
    from textual_inversion.concepts import load_concepts
    from textual_inversion.models import load_pipeline

    pipe = load_pipeline("miniworld")
    load_concepts(pipe, [str(embedding)])
    return pipe


def fixed_batch_losses(embedding: Path, folder: Path, spec, batches: int) -> tuple[float, list[float]]:
    """(mean loss, mean loss per QUARTERS) of the vectors in `embedding` over `batches` batches of 4 drawn from one
    fixed generator: the same pictures, captions, noise and timesteps for every run of the concept."""
    errors, timesteps = fixed_batch_errors(embedding, folder, spec, batches)
    quarters = [errors[(timesteps >= low) & (timesteps < high)].mean().item() for low, high in QUARTERS]
    return errors.mean().item(), quarters


def fixed_batch_errors(embedding: Path, folder: Path, spec, batches: int):
    """(errors [4 * batches], timesteps [4 * batches]): each sample's loss with the vectors in `embedding` on
    `batches` batches of 4 from one fixed generator (see fixed_batch_losses), for paired comparisons."""
    import torch

    from textual_inversion import TrainConfig
    from textual_inversion.data import draw_batch, read_training_data
    from textual_inversion.objective import DenoisingLoss, training_scheduler
    from textual_inversion.training import encode_pictures

    pipe = pipeline_with(embedding)
    config = TrainConfig.from_values(with_former_defaults(dict(
        model="miniworld", images=str(folder), token=spec.token, init_token=spec.init_word)))
    data = read_training_data(folder, spec.token, spec.property)
    data.caches = encode_pictures(pipe, data, config, 64, torch.device("cpu"))
    loss = DenoisingLoss(pipe, training_scheduler(pipe))
    source = torch.Generator().manual_seed(12345)
    errors, timesteps = [], []
    with torch.no_grad():
        for _ in range(batches):
            batch = draw_batch(data, 4, None, source, 1000, pipe.vae.config.scaling_factor, 0, 1)
            errors.append(loss(batch))
            timesteps.append(batch.timesteps)
    return torch.cat(errors), torch.cat(timesteps)


def ranks(values: list[float]) -> list[float]:
    """Each value's rank from 0, tied values sharing the mean of their ranks (fidelity comes in sixteenths)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            result[order[position]] = (start + end) / 2
        start = end + 1
    return result


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation: Pearson's of the ranks (n is small, so read it with n)."""
    ra, rb = ranks(a), ranks(b)
    mean_a, mean_b = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - mean_a) * (y - mean_b) for x, y in zip(ra, rb, strict=True))
    var_a = sum((x - mean_a) ** 2 for x in ra)
    var_b = sum((y - mean_b) ** 2 for y in rb)
    return cov / (var_a * var_b) ** 0.5 if var_a and var_b else float("nan")


def guidance_rows(run: str, workdir: Path, scales: list[float]) -> list[str]:
    """Fidelity and the judge's colour readings of `run` ('concept/run folder') at each guidance scale."""
    from textual_inversion.evaluate import score_condition

    concept, name = run.split("/")
    _, spec = find_concept(concept, workdir / "concepts")
    pipe = pipeline_with(workdir / concept / name / "learned_embeds.safetensors")
    lines = []
    for scale in scales:
        with tempfile.TemporaryDirectory() as scratch:
            scores, records = score_condition(pipe, spec, "concept", Path(scratch), guidance=scale, edits=False, seed=0)
        colours = Counter(p["colour"] for record in records for p in record["predicted"])
        read = ", ".join(f"{colour} {count}" for colour, count in colours.most_common())
        lines.append(f"| {concept} | {name} | {scale:g} | {scores['fidelity']:.2f} | {read} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--concepts", nargs="+", default=list(HIDDEN_COLOURS))
    parser.add_argument("--batches", type=int, default=40, help="fixed batches of 4 per run")
    parser.add_argument("--workdir", default="runs/concept-sweep", help="the concept sweep's workdir")
    parser.add_argument("--guidance-runs", nargs="*", default=[], metavar="CONCEPT/RUN")
    parser.add_argument("--guidance", nargs="+", type=float, default=[1.0, 2.0, 4.0, 7.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results-suffix", default="")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    rows = [json.loads(line) for line in measured_on_packaged_model(SWEEP_RESULTS).read_text().splitlines()]
    table, correlations = [], []
    for concept in args.concepts:
        folder, spec = find_concept(concept, workdir / "concepts")
        measured = []
        for run in sorted((workdir / concept).glob("*-seed*")):
            condition, seed = run.name.rsplit("-seed", 1)
            embedding = run / "learned_embeds.safetensors"
            score = recorded_score(rows, concept, condition, int(seed))
            if not is_textual_inversion(condition) or not embedding.is_file() or score is None:
                continue
            mean, quarters = fixed_batch_losses(embedding, folder, spec, args.batches)
            measured.append((score["fidelity"], mean))
            table.append(f"| {concept} | {run.name} | {score['passes']} | {score['fidelity']:.2f} / "
                         f"{score['editability']:.2f} | {mean:.5f} | " + " | ".join(f"{q:.5f}" for q in quarters) + " |")
            print(table[-1], flush=True)
        if len(measured) >= 3:
            fidelity, loss = zip(*measured, strict=True)
            best = max(measured)
            lowest = min(measured, key=lambda m: m[1])
            correlations.append(f"| {concept} | {len(measured)} | {spearman(list(loss), list(fidelity)):+.2f} | "
                                f"{lowest[0]:.2f} | {best[0]:.2f} |")

    lines = [f"# The training loss against the judge's fidelity, run by run ({machine('cpu', args.threads)})", "",
             f"Produced by `{command()}`. Every textual-inversion run folder of each concept under {args.workdir} "
             f"(those that runs/ still held; the sweep's rows, {SWEEP_RESULTS.name}, give each run's fidelity / "
             f"editability at its largest budget, which its saved vectors are): the denoising loss of the saved vectors "
             f"on {args.batches} fixed batches of 4 (the concept's pictures and captions; the same noise and timesteps "
             "for every run of a concept), overall and per quarter of the noise schedule (t from 0, least noise, to 999).",
             "", "| concept | run | passes | fidelity / editability | loss | t 0-249 | t 250-499 | t 500-749 | t 750-999 |",
             "|---|---|---|---|---|---|---|---|---|", *table, "",
             "Per concept: Spearman's rank correlation of loss and fidelity (negative: lower loss, higher fidelity), the "
             "fidelity of the lowest-loss run, and the best fidelity among them.", "",
             "| concept | runs | rank correlation | fidelity of the lowest loss | best fidelity |", "|---|---|---|---|---|",
             *correlations]
    if args.guidance_runs:
        lines += ["", "Fidelity by guidance scale (the evaluation's fidelity prompts and seeds, 16 pictures, DDIM 25; "
                  "the judge's colour readings):", "",
                  "| concept | run | guidance | fidelity | colours read |", "|---|---|---|---|---|"]
        for run in args.guidance_runs:
            lines += guidance_rows(run, workdir, args.guidance)
    lines += ["", f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."]
    print_and_write(lines, RESULTS_DIR / f"loss_against_fidelity{args.results_suffix}.md")


if __name__ == "__main__":
    main()
