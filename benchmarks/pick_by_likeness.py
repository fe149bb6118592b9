"""Can `textual-inversion pick` choose between two trainings of one concept without a judge? Each concept and seed's
two sweep runs ranked by likeness to their training pictures (textual_inversion.likeness: pictures of each training
caption against the caption's picture, Gram matrices of VAE encoder features), beside the judge's reading of each
(its sweep evaluation, read from its folder), which says whether the pick was right.

No one textual-inversion setting learns all 12 drawable concepts of the set: `--steps 3200` misses striped concepts
on some seeds, the stripes' bias misses checkered ones and hidden colours. A user's subject has no judge, but it has
its pictures and captions; if they pick the run at the targets, training both and keeping the nearer is one recipe.

    python -m benchmarks.pick_by_likeness --workdir runs/seeds23 --concepts striped-style checkered-style \
        --seeds 2 3 --candidates ti-average-12800 ti-average-noisiest-3200
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from .common import RESULTS_DIR, argument_parser, command, print_and_write
from .concept_sweep import at_target


def judged(run: Path) -> dict:
    """The sweep's evaluation of a run folder `<method>-<passes>-seed<N>`: {fidelity, editability}."""
    passes = re.fullmatch(r".+-(\d+)-seed\d+", run.name).group(1)
    report = json.loads((run / f"evaluation-{passes}" / "evaluation.json").read_text(encoding="utf-8"))
    return {"fidelity": report["fidelity"], "editability": report["editability"]}


def tally(pairs: list[dict[str, dict]]) -> dict[str, int]:
    """Per concept-seed pair {run name: {distance, fidelity, editability}} (two names, the same in every pair), how
    many runs are at the targets: the pick (the smaller distance), each name alone and the better of the two; of
    the pairs where exactly one is, how many the pick got; and how many picks `pick` calls close, and how many
    were wrong (the other run at the targets, the pick not) among those and among the rest."""
    from textual_inversion.likeness import close_call

    counts = {"pairs": len(pairs), "pick": 0, "either": 0, "split": 0, "split_right": 0, "close": 0,
              "close_wrong": 0, "wide_wrong": 0}
    for row in pairs:
        pick = min(row, key=lambda name: row[name]["distance"])
        hits = {name: at_target(row[name]) for name in row}
        counts["pick"] += hits[pick]
        counts["either"] += any(hits.values())
        if sum(hits.values()) == 1:
            counts["split"] += 1
            counts["split_right"] += hits[pick]
        close = close_call(sorted(r["distance"] for r in row.values())) is not None
        wrong = not hits[pick] and any(hits.values())
        counts["close"] += close
        counts["close_wrong" if close else "wide_wrong"] += wrong
        for name, hit in hits.items():
            counts[name] = counts.get(name, 0) + hit
    return counts


def pair_parser(description: str, output: Path):
    """The options of a benchmark over pairs of sweep runs: which concepts, seeds and two run names, where."""
    parser = argument_parser(description)
    parser.add_argument("--workdir", type=Path, nargs="+", required=True,
                        help="one or more concept sweeps' --workdir; a pair that one lacks is looked for in the next")
    parser.add_argument("--concepts", nargs="+", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--candidates", nargs=2, required=True,
                        help="two run names without the seed, as the sweep names them (<method>-<passes>)")
    parser.add_argument("--num-images", type=int, default=4, help="pictures per training caption")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(output))
    return parser


def sweep_pairs(args) -> Iterator[tuple[str, int, dict[str, Path]]]:
    """(concept, seed, {candidate: its run folder}) for every concept and seed `pair_parser`'s `args` name, from the
    first --workdir holding both runs; a pair none holds is skipped with a line saying so."""
    for concept in args.concepts:
        for seed in args.seeds:
            for workdir in args.workdir:
                runs = {name: workdir / concept / f"{name}-seed{seed}" for name in args.candidates}
                if all(run.is_dir() for run in runs.values()):
                    yield concept, seed, runs
                    break
            else:
                print(f"skipped {concept} seed {seed}: no workdir holds both runs", flush=True)


def main() -> None:
    from textual_inversion.likeness import CLOSE_MARGIN, SEED, run_likeness
    from textual_inversion.models import use_threads

    parser = pair_parser(__doc__, RESULTS_DIR / "pick_by_likeness.md")
    parser.add_argument("--seed", type=int, default=SEED, help="the first picture's seed")
    args = parser.parse_args()
    use_threads(args.threads)
    first, second = args.candidates
    lines = [f"# Picking between two trainings by likeness to the training pictures: {first} or {second}", "",
             f"Produced by `{command()}`. Distance: geometric mean of the relative Gram distances (the VAE encoder's "
             f"input convolution) between {args.num_images} pictures of each training caption and its training "
             "picture, as `textual-inversion pick` measures it; the nearer run is picked. Fidelity / editability: the "
             "run's sweep evaluation (the judge). At the targets: fidelity >= 0.8 with editability >= 0.7.", "",
             f"| concept | seed | {first}: distance, fidelity / editability | {second}: distance, fidelity / "
             "editability | pick | pick at the targets | either at the targets |", "|---|---|---|---|---|---|---|"]
    pairs = []
    for concept, seed, runs in sweep_pairs(args):
        row = {name: {"distance": run_likeness(run, args.num_images, args.seed).distance, **judged(run)}
               for name, run in runs.items()}
        pairs.append(row)
        pick = min(row, key=lambda name: row[name]["distance"])
        cells = [f"{row[n]['distance']:.4f}, {row[n]['fidelity']:.2f} / {row[n]['editability']:.2f}"
                 for n in (first, second)]
        lines.append(f"| {concept} | {seed} | {' | '.join(cells)} | {pick} | "
                     f"{'yes' if at_target(row[pick]) else 'no'} | "
                     f"{'yes' if any(at_target(r) for r in row.values()) else 'no'} |")
        print(lines[-1], flush=True)
    counts = tally(pairs)
    lines += ["", f"Runs at the targets, of {counts['pairs']} concept-seed pairs: the pick {counts['pick']}, "
              f"{first} alone {counts.get(first, 0)}, {second} alone {counts.get(second, 0)}, the better of the two "
              f"{counts['either']}. Where exactly one of the two is at the targets, the pick is that one in "
              f"{counts['split_right']} of {counts['split']}. Picks `pick` calls close (the runner-up under "
              f"{CLOSE_MARGIN:.0%} farther): {counts['close']}, wrong in {counts['close_wrong']}; the other "
              f"{counts['pairs'] - counts['close']} wrong in {counts['wide_wrong']}."]
    print_and_write(lines, Path(args.output))


if __name__ == "__main__":
    main()
