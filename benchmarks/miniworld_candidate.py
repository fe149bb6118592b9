"""A candidate miniworld (a build's --output, e.g. `build --continue-from`) against the shipped one, side by side.

    python -m benchmarks.miniworld_candidate --candidate runs/miniworld-continued/model [--concepts ...] [--seeds 0]
        [--methods textual-inversion pivotal] [--passes 3200] [--methods-on-candidate-only]

For each model: the base-quality rates of benchmarks/miniworld_quality.py (its prompt set), the conditioning
ceiling of benchmarks/conditioning_ceiling.py (from "a <init word>", 400 steps) on concepts of the new set,
and with --methods each method trained as benchmarks/concept_sweep.py trains it, scored at --passes. The
shipped model's ceilings and methods are read from the concept sweep's results where they were measured
(deterministic on this machine), the base-quality rates and the candidate's rows from
benchmarks/results/miniworld_candidate.jsonl (named by the candidate's folder, or "shipped", and by a hash of
the weights, so that a model rebuilt in the same folder is measured afresh), appended as they are made; what is
missing is computed and appended. The concept sweep's file names its weights in its first row and is refused
once another model is packaged. --methods-on-candidate-only trains nothing on the shipped model.
Writes benchmarks/results/miniworld_candidate.md (or --report).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .common import RESULTS_DIR, argument_parser, command, print_and_write, weights_fingerprint
from .concept_set import SWEEP_RESULTS, measured_on_packaged_model, write_concept_set
from .concept_sweep import METHODS, at_target, done, misreads, record, train_and_score
from .conditioning_ceiling import LATER_BIAS, SETTINGS, ceiling, ceiling_rows
from .miniworld_quality import ROWS, TARGETS, measure, prompt_set

CANDIDATE_RESULTS = RESULTS_DIR / "miniworld_candidate.jsonl"


def ceilings(pipe, judge, concepts: dict, names: list[str], seeds: list[int], known: list[dict], results: Path,
             labels: dict, timestep_bias: dict | None = None) -> dict:
    """{(concept, seed): (last check, best check)}: from `known` rows where present, else optimised here (with
    `timestep_bias`, see conditioning_ceiling.ceiling) and appended to `results` as a row with `labels`."""
    found = {}
    for name in names:
        _, folder, spec = concepts[name]
        for seed in seeds:
            row = next((r for r in known if r["concept"] == name and r["seed"] == seed), None)
            if row is None:
                checks = ceiling(pipe, judge, folder, spec.attributes, f"a {spec.init_word}", seed=seed,
                                 timestep_bias=timestep_bias, **SETTINGS)
                print(name, seed, checks, flush=True)
                found[name, seed] = (checks[-1][2], max(c[2] for c in checks))
                record(results, {"concept": name, "kind": concepts[name][0], **labels, "seed": seed,
                                 "fidelity": found[name, seed][0], "peak": found[name, seed][1],
                                 "steps": SETTINGS["steps"]})
            else:
                found[name, seed] = (row["fidelity"], row["peak"])
    return found


def recorded_run(rows: list[dict], method: str, name: str, seed: int, passes: int) -> dict | None:
    """The first of `rows` that is `method`'s run on concept `name` with `seed`, scored at `passes`, or None."""
    return next((r for r in rows if r.get("condition") == method and r.get("concept") == name
                 and r.get("seed") == seed and r.get("passes") == passes), None)


def method_scores(method: str, passes: int, concepts: dict, names: list[str], seeds: list[int], known: list[dict],
                  results: Path, labels: dict, model: str, workdir: Path, threads: int) -> dict:
    """{(concept, seed): its row} of `method` at `passes` on `model`: from `known` rows where present, else trained
    here (concept_sweep's run) and appended to `results` with `labels`."""
    found = {}
    for name in names:
        kind, folder, spec = concepts[name]
        for seed in seeds:
            row = recorded_run(known, method, name, seed, passes)
            if row is None:
                run = workdir / "candidate" / name / f"{method}-seed{seed}"
                (row,) = train_and_score(method, name, kind, folder, spec, seed, [passes], [passes], 4, run, threads,
                                         model)
                record(results, {**row, **labels})
            found[name, seed] = row
    return found


def same_model(row: dict, key: dict) -> bool:
    """Whether a results row has every value of `key` (its model, weights and whatever else the key names)."""
    return all(row.get(name) == value for name, value in key.items())


def main() -> None:
    from textual_inversion.miniworld import model_path
    from textual_inversion.miniworld.judge import load_judge
    from textual_inversion.models import load_pipeline

    parser = argument_parser(__doc__)
    parser.add_argument("--candidate", required=True, help="the candidate's pipeline folder")
    parser.add_argument("--concepts", nargs="+", help="concepts of benchmarks/concept_set.py (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--prompts", type=int, default=144, help="base-quality prompts (2 images each)")
    parser.add_argument("--workdir", default="runs/concept-sweep", help="where the concepts are rendered")
    parser.add_argument("--methods", nargs="+", default=[], choices=list(METHODS),
                        help="methods of benchmarks/concept_sweep.py to train on each model and concept")
    parser.add_argument("--passes", type=int, default=3200, help="the methods' training budget in UNet passes")
    parser.add_argument("--ceiling-timesteps", choices=("uniform", "later"), default="uniform",
                        help="the ceilings' timesteps: uniform, or later (half from the noisiest tenth, as the "
                             "ti-cosine-later method trains the token)")
    parser.add_argument("--no-ceilings", action="store_true",
                        help="leave the ceilings out (they take about as long as a method's runs): to compare the "
                             "methods on two models")
    parser.add_argument("--methods-on-candidate-only", action="store_true",
                        help="train the methods on the candidate only; the shipped model's cells show the concept "
                             "sweep's rows where it has them, '-' where not")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report", default=str(RESULTS_DIR / "miniworld_candidate.md"), help="the table to write")
    args = parser.parse_args()
    if not (Path(args.candidate) / "model_index.json").is_file():
        parser.error(f"--candidate {args.candidate}: no model_index.json there; give a build's --output folder")
    torch.set_num_threads(args.threads)
    measured_on_packaged_model(SWEEP_RESULTS)  # the shipped model's rows are read from there
    concepts = write_concept_set(Path(args.workdir) / "concepts")
    names = args.concepts or list(concepts)
    judge = load_judge()
    models = {"shipped": str(model_path()), "candidate": args.candidate}
    quality, ceiling_of, scores = {}, {}, {}
    for label, path in models.items():
        pipe = load_pipeline(path)
        pipe.set_progress_bar_config(disable=True)
        pipe.unet.requires_grad_(False)
        model = {"model": "shipped" if label == "shipped" else path, "weights": weights_fingerprint(Path(path))}
        key = {**model, "condition": "quality", "prompts": args.prompts}
        known = next((r for r in done(CANDIDATE_RESULTS) if same_model(r, key)), None)
        if known is None:
            _, rates, _ = measure(pipe, judge, prompt_set(args.prompts), 2, 25, 4.0, 0)
            known = {**key, "rates": rates}
            record(CANDIDATE_RESULTS, known)
        quality[label] = known["rates"]
        if not args.no_ceilings:
            if label == "shipped" and args.ceiling_timesteps == "uniform":  # as conditioning_ceiling.py records it
                ceiling_of[label] = ceilings(pipe, judge, concepts, names, args.seeds, ceiling_rows(SWEEP_RESULTS),
                                             SWEEP_RESULTS, {"condition": "ceiling"})
            else:
                biased = args.ceiling_timesteps == "later"
                labels = {**model, "condition": "ceiling", **({"timestep_bias": "later"} if biased else {})}
                ceiling_of[label] = ceilings(pipe, judge, concepts, names, args.seeds,
                                             [r for r in done(CANDIDATE_RESULTS) if same_model(r, model)
                                              and r["condition"] == "ceiling"
                                              and r.get("timestep_bias") == labels.get("timestep_bias")],
                                             CANDIDATE_RESULTS, labels, LATER_BIAS if biased else None)
        for method in args.methods:
            if label == "shipped" and args.methods_on_candidate_only:
                swept = done(SWEEP_RESULTS)
                scores[label, method] = {(name, seed): row for name in names for seed in args.seeds
                                         if (row := recorded_run(swept, method, name, seed, args.passes))}
                continue
            if label == "shipped":
                known, results, labels = done(SWEEP_RESULTS), SWEEP_RESULTS, {}
            else:
                known, results = [r for r in done(CANDIDATE_RESULTS) if same_model(r, model)], CANDIDATE_RESULTS
                labels = model
            scores[label, method] = method_scores(method, args.passes, concepts, names, args.seeds, known, results,
                                                  labels, path, Path(args.workdir), args.threads)

    lines = [f"# A candidate miniworld against the shipped one ({args.candidate})", "",
             f"Produced by `{command()}`. Base quality: benchmarks/miniworld_quality.py's {args.prompts} prompts x 2 "
             "images, 25 DDIM steps, guidance 4, read by the judge. Ceiling: the whole conditioning optimised on the "
             "concept's pictures from \"a <init word>\" (benchmarks/conditioning_ceiling.py, 400 steps"
             + (", half the timesteps from t >= 900 as ti-cosine-later trains" if args.ceiling_timesteps == "later"
                else "") + "), judged on 16 pictures every 100 steps: last check / best check, per seed"
             + (" (left out of this run: --no-ceilings)." if args.no_ceilings else "."), "",
             "| base quality | shipped | candidate | target |", "|---|---|---|---|"]
    for key, label in ROWS.items():
        target = f"{100 * TARGETS[key]:.0f} %" if key in TARGETS else "-"
        lines.append(f"| {label} | {100 * quality['shipped'][key]:.1f} % | {100 * quality['candidate'][key]:.1f} % "
                     f"| {target} |")
    if not args.no_ceilings:
        lines += ["", "| concept | kind | ceiling, shipped | ceiling, candidate |", "|---|---|---|---|"]
        for name in names:
            cells = [", ".join(f"{ceiling_of[label][name, seed][0]:.2f} / {ceiling_of[label][name, seed][1]:.2f}"
                               for seed in args.seeds) for label in models]
            lines.append(f"| {name} | {concepts[name][0]} | {' | '.join(cells)} |")
    for method in args.methods:
        lines += ["", f"{method} at {args.passes} passes (benchmarks/concept_sweep.py's settings), fidelity / "
                  "editability per seed, at the targets (>= 0.8 / >= 0.7) marked *; and what the judge read instead of "
                  "the concept's attributes on the candidate's fidelity images (16 per run), per seed:", "",
                  f"| concept | kind | {method}, shipped | {method}, candidate | candidate's misreads |",
                  "|---|---|---|---|---|"]
        for name in names:
            runs = {label: [scores[label, method].get((name, seed)) for seed in args.seeds] for label in models}
            cells = [", ".join("-" if r is None else f"{r['fidelity']:.2f} / {r['editability']:.2f}"
                               + ("*" if at_target(r) else "") for r in runs[label]) for label in models]
            reads = " / ".join(misreads(r["fidelity_reads"], concepts[name][2].attributes) if "fidelity_reads" in r
                               else "-" for r in runs["candidate"])
            lines.append(f"| {name} | {concepts[name][0]} | {' | '.join(cells)} | {reads} |")
        for label in models:
            values = list(scores[label, method].values())
            if not values:
                continue
            lines.append(f"\n{label}: {sum(map(at_target, values))} of {len(values)} runs at the targets, mean "
                         f"{sum(r['fidelity'] for r in values) / len(values):.2f} / "
                         f"{sum(r['editability'] for r in values) / len(values):.2f}")
    print_and_write(lines, Path(args.report))


if __name__ == "__main__":
    main()
