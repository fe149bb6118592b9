"""Time from "here are my images" to a learned concept, as a user gets it: one `textual-inversion train`.

The clock runs from launching the command to its exit (Python start, imports, model load, latent
encoding, training, files written); what it learned (the embedding, and the LoRA of `--method pivotal`
or `lora`) is then scored on the fidelity and edit prompts (not timed). Run it alone on the machine: it
measures wall time. Written to benchmarks/results/time_to_concept_end_to_end<suffix>.md.

    python -m benchmarks.concept_end_to_end [--concepts hidden-colour teal-square ...] [--steps 400] [--seeds 0 1 2] \
        [--options "--vectors 6 --lr 0.05 --batch-size 4"] [--results-suffix _stop]
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import RESULTS_DIR, argument_parser, command, former_settings, print_and_write
from .concept_set import find_concept


def former_defaults(options: str) -> list[str]:
    """common.former_settings of the method `options` name as `train` options; `options`, coming after, win."""
    words = shlex.split(options)
    methods = [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--method"]
    methods += [word.partition("=")[2] for word in words if word.startswith("--method=")]
    former = former_settings(methods[-1] if methods else "textual-inversion")
    return [word for name, value in former.items() for word in (f"--{name.replace('_', '-')}", str(value))]


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--concepts", nargs="+", default=["hidden-colour"],
                        help="bundled concepts or names from benchmarks/concept_set.py")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--options", default="--vectors 6 --lr 0.05 --batch-size 4",
                        help="further `train` options, as one string")
    parser.add_argument("--num-images", type=int, default=4, help="images per fidelity prompt when scoring")
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--results-suffix", default="", help="write time_to_concept_end_to_end<suffix>.md")
    args = parser.parse_args()

    from textual_inversion import load_concepts
    from textual_inversion.evaluate import evaluate_concept
    from textual_inversion.models import load_pipeline

    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for concept in args.concepts:
            folder, spec = find_concept(concept, Path(workdir) / "concept-set")
            train_options = ["--token", spec.token, "--init-token", spec.init_word, "--property", spec.property,
                             "--steps", str(args.steps), *former_defaults(args.options), *shlex.split(args.options)]
            for seed in args.seeds:
                output = Path(workdir) / f"{concept}-seed-{seed}"
                train_command = ["textual-inversion", "train", "--images", str(folder), *train_options,
                                 "--seed", str(seed), "--output-dir", str(output)]
                started = time.perf_counter()
                finished = subprocess.run(train_command, capture_output=True, text=True,
                                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
                seconds = time.perf_counter() - started
                if finished.returncode:
                    sys.exit(f"train failed: {finished.stderr.strip().splitlines()[-1]}")
                run = json.loads((output / "run.json").read_text())
                steps_run = run["metadata"]["steps"]
                pipe = load_pipeline("miniworld")
                load_concepts(pipe, [output])
                report = evaluate_concept(pipe, spec, output / "scores", args.num_images, conditions=("concept",))
                rows.append((concept, seed, seconds, steps_run, report["fidelity"], report["editability"]))
                checks = " ".join(f"{step}:{share:.2f}" for step, share in run.get("learned_checks", []))
                print(f"{concept} seed {seed}: {seconds:.1f} s, {steps_run} steps, fidelity {report['fidelity']:.2f}, "
                      f"editability {report['editability']:.2f}"
                      + (f"; --stop-when-learned checks (step:share) {checks}" if checks else ""), flush=True)

    shown = shlex.join(["textual-inversion", "train", "--images", "<concept folder>", "--token", "<its token>",
                        "--init-token", "<its word>", "--property", "<its kind>", "--steps", str(args.steps),
                        *shlex.split(args.options)])
    lines = [f"# Images to learned concept, end to end ({', '.join(args.concepts)}; {os.cpu_count()} CPU cores)", "",
             f"Produced by `{command()}`. Each row is one "
             f"`{shown} --seed N`, timed from launch to exit; then what it learned is scored (target: fidelity >= "
             f"{args.target} on the fidelity prompts, {args.num_images} images each; editability, the edit prompts "
             "honoured with the concept kept, is shown beside it).", "",
             "| concept | seed | seconds, launch to exit | steps run | fidelity | editability | target met |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {concept} | {seed} | {seconds:.1f} | {steps_run} | {fidelity:.2f} | {editability:.2f} | "
              f"{'yes' if fidelity >= args.target else 'no'} |"
              for concept, seed, seconds, steps_run, fidelity, editability in rows]
    met = [row for row in rows if row[4] >= args.target]
    lines += ["", f"Target met on {len(met)} of {len(rows)} runs; median seconds "
                  f"{statistics.median(row[2] for row in rows):.1f}, slowest {max(row[2] for row in rows):.1f}."]
    lines += ["", f"Load average (1 min) before: {load_before:.1f}, after: {os.getloadavg()[0]:.1f}, on "
                  f"{os.cpu_count()} cores (other jobs would stretch the seconds)."]
    print_and_write(lines, RESULTS_DIR / f"time_to_concept_end_to_end{args.results_suffix}.md")


if __name__ == "__main__":
    main()
