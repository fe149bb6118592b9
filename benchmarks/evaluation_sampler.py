"""The judge's evaluation sampled with fewer steps: does the judge still read the same images?

Trains three bundled concepts briefly (textual inversion, so that their images hold hits and misses), then
evaluates each with every sampler setting: the evaluation's own (the model's DDIM, 25 steps) and faster
ones. Sampler settings alternate within each round, in one process. Per setting: seconds, the scores, and
how many images the judge reads as the 25-step DDIM images (the same hit or miss on the prompt's
attributes, and the same reading of every attribute). Written to benchmarks/results/evaluation_sampler.md.

    python -m benchmarks.evaluation_sampler [--samplers ddim:25 ddim:10 dpm++:10 dpm++:15] [--rounds 2]
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

CONCEPTS = ("hidden-colour", "dotted-style", "star")
TRAINING = {"steps": 200, "lr": 0.1, "vectors": 6, "batch_size": 4}


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--samplers", nargs="+", default=["ddim:25", "ddim:10", "dpm++:10", "dpm++:15"],
                        help="scheduler:steps; the first is the reference")
    parser.add_argument("--concepts", nargs="+", default=list(CONCEPTS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from textual_inversion.concepts import load_concepts
    from textual_inversion.config import TrainConfig
    from textual_inversion.evaluate import evaluate_concept
    from textual_inversion.models import load_pipeline
    from textual_inversion.training import train

    torch.set_num_threads(args.threads)
    samplers = [(name, int(steps)) for name, steps in (s.rsplit(":", 1) for s in args.samplers)]
    seconds = {s: [] for s in samplers}
    reports: dict[tuple, dict] = {}  # (concept, sampler) -> the last round's report
    with tempfile.TemporaryDirectory() as workdir:
        for concept in args.concepts:
            folder, spec = bundled_concept(concept)
            run = Path(workdir) / concept
            train(TrainConfig.from_values(with_former_defaults(dict(
                images=str(folder), token=spec.token, init_token=spec.init_word, property=spec.property, seed=0,
                output_dir=str(run), checkpoint_every=0, threads=args.threads, **TRAINING))))
            pipe = load_pipeline("miniworld")
            load_concepts(pipe, [run])
            for round_index in range(args.rounds):
                for name, steps in samplers:
                    started = time.perf_counter()
                    reports[concept, (name, steps)] = evaluate_concept(
                        pipe, spec, run / f"eval-{name}-{steps}-{round_index}", steps=steps, scheduler=name)
                    seconds[name, steps].append(time.perf_counter() - started)
                    print(f"{concept}, round {round_index}, {name} {steps} steps: {seconds[name, steps][-1]:.1f} s",
                          flush=True)

    reference = samplers[0]
    lines = [f"# The judge's evaluation at fewer sampling steps ({machine('cpu', args.threads)})", "",
             f"Produced by `{command()}`. Concepts {', '.join(args.concepts)}, each trained once with textual "
             f"inversion ({TRAINING['steps']} steps, lr {TRAINING['lr']}, {TRAINING['vectors']} vectors, batch "
             f"{TRAINING['batch_size']}, seed 0), then evaluated by `evaluate_concept` with its three conditions "
             "(learned token, init word, plain words; 4 images per prompt, guidance 4) under each sampler, "
             f"alternating, {args.rounds} rounds. Same images: the judge's hit or miss on the prompt's attributes "
             f"is the same as under {reference[0]} {reference[1]} steps; same reading: every attribute it reads "
             "is the same.", "",
             "| sampler | steps | seconds per evaluation (median) | time / reference | same images | same reading |",
             "|---|---|---|---|---|---|"]
    reference_seconds = statistics.median(seconds[reference])
    for sampler in samplers:
        same_hit = same_reading = total = 0
        for concept in args.concepts:
            ours, theirs = reports[concept, sampler]["prompts"], reports[concept, reference]["prompts"]
            for mine, base in zip(ours, theirs, strict=True):
                for a, b in zip(mine["predicted"], base["predicted"], strict=True):
                    expected = mine["expected"]
                    same_hit += all(a[k] == v for k, v in expected.items()) == all(b[k] == v for k, v in expected.items())
                    same_reading += a == b
                    total += 1
        median = statistics.median(seconds[sampler])
        lines.append(f"| {sampler[0]} | {sampler[1]} | {median:.1f} | {median / reference_seconds:.2f} | "
                     f"{same_hit} of {total} ({same_hit / total:.1%}) | {same_reading} of {total} ({same_reading / total:.1%}) |")
    lines += ["", "Scores under each sampler (fidelity / editability; init word and plain words are the baselines):", "",
              "| concept | sampler | learned token | init word | plain words |", "|---|---|---|---|---|"]
    for concept in args.concepts:
        for sampler in samplers:
            report = reports[concept, sampler]
            baselines = report["baselines"]
            lines.append(f"| {concept} | {sampler[0]} {sampler[1]} | {report['fidelity']:.2f} / {report['editability']:.2f} | "
                         f"{baselines['init_word']['fidelity']:.2f} / {baselines['init_word']['editability']:.2f} | "
                         f"{baselines['words']['fidelity']:.2f} / {baselines['words']['editability']:.2f} |")
    lines += ["", f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."]
    print_and_write(lines, RESULTS_DIR / "evaluation_sampler.md")


if __name__ == "__main__":
    main()
