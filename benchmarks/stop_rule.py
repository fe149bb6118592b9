"""Which `--stop-when-learned` check stops a run when its concept is learned, and not before?

Each concept and seed trains once for --steps; every --every steps, in the same process, the candidate
checks score the current embedding, and so does the judge's evaluation on the fidelity prompts (4 images
each, the evaluation's own DDIM at 25 steps: the figure a stop should reach). A rule (a check, a share
it must reach, how many checks in a row) then stops each run at its first pass; the table says where,
with the evaluation's fidelity there. Written to benchmarks/results/stop_rule.md.

    python -m benchmarks.stop_rule [--concepts hidden-colour dotted-style my-toy] [--seeds 0 1 2] [--steps 300] \
        [--lr 0.2] [--checks requests-8 requests-4 requests-8-6steps] [--results-suffix _lr0.1] \
        [--setting pivotal] [--evaluate-at-stops]

--concepts takes the bundled concepts (examples/concepts/) and those of the new concept set
(benchmarks/concept_set.py), on which no rule was chosen. --evaluate-at-stops scores the evaluation only where
some rule stops and at the last step (the evaluation costs far more than the checks), so a run no rule stops
shows only its end. --from-results tabulates the rules over the runs of earlier results files instead of training
(several files: their runs together, e.g. every run a rule was not chosen on).
"""

from __future__ import annotations

import dataclasses
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

from .common import RESULTS_DIR, argument_parser, command, machine, print_and_write, with_former_defaults
from .concept_set import find_concept

TRAINING = {"vectors": 6, "lr": 0.2, "batch_size": 4, "timesteps": "stratified"}
# --setting: what trains. pivotal is the time-to-concept benchmark's pivotal tuning (docs/speed.md), on whose runs on
# the concept set the shipped rule stopped 8 of 23 below the target (time_to_concept_end_to_end_pivotal_stop_concept_set_*.md).
# textual-inversion-average is TRAINING as `train` runs it on miniworld, whose defaults there keep the moving average
# (ema_decay 0.99) that the checks then read: docs/speed.md's textual-inversion command. TRAINING alone leaves it out,
# as the studies of the model before did.
SETTINGS = {"textual-inversion": TRAINING, "textual-inversion-average": {**TRAINING, "ema_decay": 0.99},
            "pivotal": {"method": "pivotal", "vectors": 6, "lr": 0.05, "lora_lr": 1e-3, "rank": 8, "batch_size": 4,
                        "ti_fraction": 1.0}}
SHARES = (0.75, 0.875)
IN_A_ROW = (1, 2)
EVALUATION_STEPS = 25  # the evaluation's sampler steps here (the pipeline's own DDIM), and requests-8-ddim25's


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A check this benchmark compares. With `fresh_noise` its images get new noise at every check (the seeds move on
    by its image count), so that two checks in a row are two samples: with the same noise each time, a lucky draw
    passes again and again."""

    check: object  # learned_check.LearnedCheck
    fresh_noise: bool = False

    def drawn_at(self, number: int):
        """The LearnedCheck as the run's `number`-th check draws it."""
        if not self.fresh_noise:
            return self.check
        return dataclasses.replace(self.check, seed=self.check.seed + len(self.check.prompts) * number)


def candidate_checks(check, captions: list[list[str]]) -> dict[str, Candidate]:
    """Every check this benchmark can compare, by name: plain requests for the token (8 images, the one shipped),
    each picture's caption and a plain request in turn (8), those twice over with other seeds (16), and cheaper
    plain-request checks: the first 4 images, or all 8 with fewer sampler steps; and checks nearer the evaluation:
    plain requests twice over with other seeds (16), the 8 drawn with the evaluation's own sampler and steps, or
    the 8 with new noise at every check."""
    in_captions = [options[0] for options in captions]
    mixed = [prompt for i in range(4) for prompt in (in_captions[i % len(in_captions)], check.prompts[i])]
    checks = {"mixed-8": dataclasses.replace(check, prompts=mixed), "requests-8": check,
              "mixed-16": dataclasses.replace(check, prompts=mixed * 2),
              "requests-4": dataclasses.replace(check, prompts=check.prompts[:4]),
              "requests-8-6steps": dataclasses.replace(check, steps=6),
              "requests-8-4steps": dataclasses.replace(check, steps=4),
              "requests-16": dataclasses.replace(check, prompts=check.prompts * 2),
              "requests-8-ddim25": dataclasses.replace(check, scheduler=None, steps=EVALUATION_STEPS)}
    return {**{name: Candidate(each) for name, each in checks.items()},
            "requests-8-fresh": Candidate(check, fresh_noise=True)}


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--concepts", nargs="+", default=["hidden-colour", "dotted-style", "my-toy"],
                        help="bundled concepts or names from benchmarks/concept_set.py")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=None, help="the setting's learning rate instead (textual "
                        f"inversion's: {TRAINING['lr']})")
    parser.add_argument("--setting", choices=list(SETTINGS), default="textual-inversion")
    parser.add_argument("--evaluate-at-stops", action="store_true",
                        help="score the evaluation only where a rule stops and at the last step")
    parser.add_argument("--checks", nargs="+", default=["mixed-8", "requests-8", "mixed-16"],
                        help="names from candidate_checks")
    parser.add_argument("--results-suffix", default="", help="write stop_rule<suffix>.md")
    parser.add_argument("--from-results", nargs="+", type=Path, default=None,
                        help="stop_rule results files whose runs to tabulate (each must hold every --checks) instead "
                             "of training")
    args = parser.parse_args()
    if args.from_results:
        tabulate_results(args)
        return
    training = {**SETTINGS[args.setting], **({"lr": args.lr} if args.lr is not None else {})}

    import torch

    from textual_inversion.data import read_training_data

    torch.set_num_threads(args.threads)
    runs = []  # (concept, seed, {step: {"fidelity": f, check name: share}})
    check_seconds = {name: [] for name in args.checks}
    with tempfile.TemporaryDirectory() as workdir:
        for concept in args.concepts:
            folder, spec = find_concept(concept, Path(workdir) / "concept-set")
            data = read_training_data(folder, spec.token, spec.property)
            for seed in args.seeds:
                scores = scored_run(args, training, folder, spec, data, seed, Path(workdir) / f"{concept}-{seed}",
                                    check_seconds)
                runs.append((concept, seed, scores))

    lines = [f"# Stopping rules for --stop-when-learned ({machine('cpu', args.threads)})", "",
             f"Produced by `{command()}`. Training: {', '.join(f'{k} {v}' for k, v in training.items())}, "
             f"{args.steps} steps. Every {args.every} steps each check draws its images (DPM++, 10 steps unless its "
             "name says fewer) and the judge's evaluation scores the fidelity prompts (4 images each, DDIM 25 steps). "
             f"A rule stops a run at its first pass; fidelity then must reach {args.target}. Checks: mixed-8 (each "
             "picture's caption and a plain request in turn), requests-8 (plain requests only), mixed-16 (mixed, twice "
             "as many images), requests-4 (the first 4 of requests-8's images), requests-16 (plain requests, twice as many "
             "images), requests-8-ddim25 (requests-8's prompts and seeds drawn with the evaluation's DDIM at 25 steps), "
             "requests-8-fresh (requests-8 with new noise at every check). "
             "A pass at the last step counts as a stop here, though a run ends there anyway."
             + (" Evaluated only where some rule stops and at the last step (-: not evaluated)."
                if args.evaluate_at_stops else ""), "",
             "Seconds per check (median): " + ", ".join(
                 f"{name} {statistics.median(v):.2f} s" for name, v in check_seconds.items() if v) + ".", "",
             "## Per run: the evaluation's fidelity and each check's share at every check step", ""]
    lines += [run_line(concept, seed, scores, args.checks) for concept, seed, scores in runs]
    lines += ["", checks_line(args.checks), ""]
    lines += rules_table(runs, args.checks, args.target, {name: statistics.median(v) for name, v in check_seconds.items()})
    lines += ["", f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."]
    print_and_write(lines, RESULTS_DIR / f"stop_rule{args.results_suffix}.md")


def run_line(concept: str, seed: int, scores: dict[int, dict], checks: list[str]) -> str:
    """One run's scores at every check step, as the results file lists them (runs_from_results reads them back)."""
    return f"- {concept}, seed {seed}: " + "; ".join(
        (f"{step}: {s['fidelity']:.2f} " if "fidelity" in s else f"{step}: - ")
        + f"({' / '.join(f'{s[name]:.2f}' for name in checks)})" for step, s in sorted(scores.items()))


def checks_line(checks: list[str]) -> str:
    return f"(step: fidelity ({' / '.join(checks)}))"


def rules_table(runs: list, checks: list[str], target: float, seconds_a_check: dict[str, float]) -> list[str]:
    """The markdown table of every rule (check x share x checks in a row) over `runs`."""
    lines = ["## Each rule over every run", "",
             "| check | share | checks in a row | runs stopped | of those at the target | stopped below it "
             "| never stopped though a step reached it | runs ending at the target | mean steps to the end "
             "| checks' seconds to the stops | stop steps |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in checks:
        for share in SHARES:
            for in_a_row in IN_A_ROW:
                lines.append(rule_row(runs, name, share, in_a_row, target, seconds_a_check[name]))
    return lines + ["", "A run ends at its stop, or at its last step when the rule never stops it; it ends at the "
                        "target when the evaluation's fidelity there reaches it."]


RUN_LINE = re.compile(r"^- (\S+), seed (\d+): (.*)$")
CHECK_SCORES = re.compile(r"(\d+): (-|[\d.]+) \(([^)]*)\)")
CHECKS_LINE = re.compile(r"^\(step: fidelity \((.*)\)\)$")
SECONDS = re.compile(r"([\w-]+) ([\d.]+) s")


def runs_from_results(text: str) -> tuple[list, dict[str, float]]:
    """(runs, median seconds a check) as a stop_rule results file lists them (its per-run lines hold every score to
    2 decimals: exact enough for shares in 16ths against 0.75 and 0.875, and fidelity against 0.8)."""
    lines = text.splitlines()
    names = next(m.group(1).split(" / ") for m in map(CHECKS_LINE.match, lines) if m)
    seconds_line = next(line for line in lines if line.startswith("Seconds per check"))
    runs = []
    for match in filter(None, map(RUN_LINE.match, lines)):
        scores = {}
        for step, fidelity, shares in CHECK_SCORES.findall(match.group(3)):
            scores[int(step)] = dict(zip(names, map(float, shares.split(" / ")), strict=True))
            if fidelity != "-":
                scores[int(step)]["fidelity"] = float(fidelity)
        runs.append((match.group(1), int(match.group(2)), scores))
    return runs, {name: float(s) for name, s in SECONDS.findall(seconds_line.split(":", 1)[1])}


def tabulate_results(args) -> None:
    """--from-results: the rules' table over the runs of the given results files together."""
    runs, seconds = [], {}
    for path in args.from_results:
        if not path.is_file():
            raise SystemExit(f"--from-results {path}: no such file; give stop_rule results files "
                             "(benchmarks/results/stop_rule*.md)")
        file_runs, file_seconds = runs_from_results(path.read_text())
        missing = [name for name in args.checks if name not in file_seconds]
        if missing:
            raise SystemExit(f"--from-results {path}: has no check {', '.join(missing)}; choose --checks among "
                             f"{', '.join(file_seconds)}")
        runs += file_runs
        for name, s in file_seconds.items():
            seconds.setdefault(name, []).append(s)
    lines = [f"# Stopping rules for --stop-when-learned, over the runs of {len(args.from_results)} results files", "",
             f"Produced by `{command()}` from the per-run scores of "
             + ", ".join(f"[`{path.name}`]({path.name})" for path in args.from_results)
             + f" ({len(runs)} runs; each file says how they were trained and checked). A rule stops a run at its "
             f"first pass; fidelity then must reach {args.target}. Seconds a check: the files' median, averaged over "
             "the files.", ""]
    lines += rules_table(runs, args.checks, args.target, {name: statistics.mean(seconds[name]) for name in args.checks})
    print_and_write(lines, RESULTS_DIR / f"stop_rule{args.results_suffix}.md")


def first_stop(scores: dict[int, dict], name: str, share: float, in_a_row: int) -> int | None:
    """The step at which check `name` first reaches `share` on `in_a_row` checks in a row (None: never), by
    `train`'s own rule (learned_check.should_stop) over the checks up to each step."""
    from textual_inversion.learned_check import should_stop

    steps = sorted(scores)
    shares = [scores[step][name] for step in steps]
    return next((step for i, step in enumerate(steps) if should_stop(shares[:i + 1], share, in_a_row)), None)


def rule_row(runs: list, name: str, share: float, in_a_row: int, target: float, seconds_a_check: float) -> str:
    """One row of the rules' table: where check `name` with this share and count in a row stops each run. The
    checks' seconds count every check up to each stop (or the run's end), at the check's median seconds. A run
    scored only at the stops (--evaluate-at-stops) counts as missed when its last step reached the target. A run
    ends at its stop, or at its last step (always evaluated) when the rule never stops it."""
    stopped = good = early = missed = ends_at_target = 0
    stops, end_steps = [], []
    checks_run = 0
    for concept, seed, scores in runs:
        steps = sorted(scores)
        at = first_stop(scores, name, share, in_a_row)
        checks_run += len([step for step in steps if at is None or step <= at])
        end_steps.append(steps[-1] if at is None else at)
        ends_at_target += scores[end_steps[-1]].get("fidelity", 0) >= target
        if at is None:
            missed += any(s.get("fidelity", 0) >= target for s in scores.values())
            stops.append(f"{concept}/{seed}: -")
            continue
        stopped += 1
        reached = scores[at]["fidelity"] >= target
        good += reached
        early += not reached
        stops.append(f"{concept}/{seed}: {at} ({scores[at]['fidelity']:.2f})")
    return (f"| {name} | {share} | {in_a_row} | {stopped} of {len(runs)} | {good} | {early} | {missed} | "
            f"{ends_at_target} | {statistics.mean(end_steps):.0f} | {checks_run * seconds_a_check:.0f} | "
            f"{'; '.join(stops)} |")


def scored_run(args, training: dict, folder: Path, spec, data, seed: int, output: Path,
               check_seconds: dict) -> dict[int, dict]:
    """One training run, scored every `args.every` steps by each candidate check and by the evaluation."""
    from textual_inversion import TrainConfig, train
    from textual_inversion.evaluate import evaluate_concept
    from textual_inversion.learned_check import learned_check, learned_share
    from textual_inversion.models import load_pipeline

    pipe = load_pipeline("miniworld")
    every_check = candidate_checks(learned_check(data.images, spec.token, spec.property, seed), data.captions)
    candidates = {name: every_check[name] for name in args.checks}
    scores: dict[int, dict] = {}

    def score(step: int, loss: float) -> None:
        if step % args.every:
            return
        scores[step] = {}
        for name, candidate in candidates.items():
            started = time.perf_counter()
            scores[step][name] = learned_share(pipe, candidate.drawn_at(step // args.every))
            check_seconds[name].append(time.perf_counter() - started)
        stops_here = any(first_stop(scores, name, share, in_a_row) == step
                         for name in candidates for share in SHARES for in_a_row in IN_A_ROW)
        if args.evaluate_at_stops and not stops_here and step != args.steps:
            print(f"{spec.token} seed {seed} step {step}: {scores[step]}", flush=True)
            return
        report = evaluate_concept(pipe, spec, output / "scores", 4, steps=EVALUATION_STEPS, conditions=("concept",),
                                  edits=False)
        scores[step]["fidelity"] = report["fidelity"]
        print(f"{spec.token} seed {seed} step {step}: {scores[step]}", flush=True)

    train(TrainConfig.from_values(with_former_defaults(dict(
        images=str(folder), token=spec.token, init_token=spec.init_word, property=spec.property, steps=args.steps,
        seed=seed, checkpoint_every=0, output_dir=str(output), threads=args.threads, **training))), pipe, on_step=score)
    return scores


if __name__ == "__main__":
    main()
