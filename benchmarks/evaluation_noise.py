"""How far does one evaluation's reading move when only its pictures change? Learned runs scored again with other
evaluation seeds.

Every verdict of the concept sweep reads one evaluation a run: 16 fidelity pictures and 24 edit pictures for an
object (4 a prompt), drawn from evaluation seed 0 for every run. A run "at the targets" (fidelity >= 0.8, editability >= 0.7)
on one draw of pictures may miss them on another with nothing learned changed. This scores each given run folder of
the sweep (`<workdir>/<concept>/<method>-<passes>-seed<N>`, its concept rendered in `<workdir>/concepts/<concept>`)
with evaluation seeds far enough apart that no picture is drawn twice; seed 0 is the sweep's own draw, so its row
must repeat the sweep's figures. Per run: every evaluation, their mean and spread, how many are at the targets, and
the spread that a count of independent pictures with the mean's rate would have.

    python -m benchmarks.evaluation_noise --runs runs/seeds23/blue-striped-square/ti-average-12800-seed2 ... \
        [--eval-seeds 0 1000 2000 3000 4000 5000] [--num-images 4]
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from .common import RESULTS_DIR, argument_parser, command, print_and_write
from .concept_sweep import at_target


def binomial_spread(rate: float, pictures: int) -> float:
    """The standard deviation of the share read right among `pictures` independent pictures, each right at `rate`."""
    return math.sqrt(rate * (1 - rate) / pictures)


def run_summary(evaluations: list[dict]) -> dict:
    """{fidelity, editability: (mean, standard deviation); at_targets: how many of the evaluations are} for one run's
    `evaluations` (each with fidelity and editability)."""
    spread = {key: (statistics.mean(e[key] for e in evaluations), statistics.stdev(e[key] for e in evaluations))
              for key in ("fidelity", "editability")}
    return {**spread, "at_targets": sum(at_target(e) for e in evaluations)}


def concept_of(run: Path):
    """The ConceptSpec of a sweep's run folder: the concept.toml the sweep rendered beside its runs."""
    from textual_inversion.miniworld.concepts import ConceptSpec

    spec_file = run.parent.parent / "concepts" / run.parent.name / "concept.toml"
    if not spec_file.is_file():
        raise SystemExit(f"--runs {run}: no {spec_file}; give run folders of benchmarks.concept_sweep "
                         "(<workdir>/<concept>/<method>-<passes>-seed<N>)")
    return ConceptSpec.from_toml(spec_file)


def evaluate_run(run: Path, spec, eval_seeds: list[int], num_images: int) -> list[dict]:
    """The run's fidelity and editability on its concept `spec`, one evaluation per seed of `eval_seeds` (pictures
    under the run's evaluation-noise/seed-S folders)."""
    from textual_inversion.concepts import load_concepts, pipeline_of, read_concept
    from textual_inversion.evaluate import evaluate_concept
    from textual_inversion.models import load_pipeline

    concept = read_concept(run)
    pipe = load_pipeline(pipeline_of([concept]) or "miniworld")
    pipe.set_progress_bar_config(disable=True)
    spec.token = load_concepts(pipe, [concept])[0]
    evaluations = []
    for seed in eval_seeds:
        report = evaluate_concept(pipe, spec, run / "evaluation-noise" / f"seed-{seed}", num_images, seed=seed,
                                  conditions=("concept",))
        evaluations.append({"seed": seed, "fidelity": report["fidelity"], "editability": report["editability"]})
        print(run, evaluations[-1], flush=True)
    return evaluations


def main() -> None:
    from textual_inversion.evaluate import judged_cases
    from textual_inversion.models import use_threads

    parser = argument_parser(__doc__)
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders of benchmarks.concept_sweep")
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[0, 1000, 2000, 3000, 4000, 5000],
                        help="evaluation seeds; each prompt's pictures are seeds S + num-images x its number "
                             "onwards, so seeds 1000 apart share none")
    parser.add_argument("--num-images", type=int, default=4, help="pictures per prompt")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(RESULTS_DIR / "evaluation_noise.md"))
    args = parser.parse_args()
    use_threads(args.threads)
    lines = [f"# One evaluation's reading against another's: {len(args.runs)} learned run"
             f"{'s' if len(args.runs) > 1 else ''}, {len(args.eval_seeds)} evaluations each", "",
             f"Produced by `{command()}`. Each row scores the same learned run with another evaluation seed "
             f"({args.num_images} pictures a prompt; seed 0 is the concept sweep's own draw). Spread: the standard "
             "deviation over the evaluations; beside it in brackets, that of a count of independent pictures with "
             "the mean's rate. At the targets: fidelity >= 0.8 with editability >= 0.7.", "",
             "| run | fidelity per evaluation | editability per evaluation | fidelity mean, spread | "
             "editability mean, spread | at the targets |", "|---|---|---|---|---|---|"]
    for run in args.runs:
        spec = concept_of(run)
        evaluations = evaluate_run(run, spec, args.eval_seeds, args.num_images)
        cases = judged_cases(spec)
        fidelity_cases = sum(case.kind == "fidelity" for case in cases)
        pictures = {"fidelity": fidelity_cases * args.num_images,
                    "editability": (len(cases) - fidelity_cases) * args.num_images}
        result = run_summary(evaluations)
        spreads = [f"{result[key][0]:.2f}, {result[key][1]:.2f} ({binomial_spread(result[key][0], pictures[key]):.2f})"
                   for key in ("fidelity", "editability")]
        per_evaluation = [", ".join(f"{e[key]:.2f}" for e in evaluations) for key in ("fidelity", "editability")]
        lines.append(f"| {run.parent.name}/{run.name} | {' | '.join(per_evaluation)} | {' | '.join(spreads)} | "
                     f"{result['at_targets']} of {len(evaluations)} |")
    print_and_write(lines, Path(args.output))


if __name__ == "__main__":
    main()
