"""What a change of judge moves: the evaluations under a folder read again from their grids by other judges.

    python -m benchmarks.rejudge --workdir runs/redstar-recheck --judge before=runs/session/judge-before \\
        --judge packaged=src/textual_inversion/miniworld/judge [--results-suffix _X]

Each evaluation.json's pictures of the concept (not the baselines) are cut from the grids the evaluation wrote,
lossless PNGs, so the judge an evaluation was scored with gives its stored figures back; where a prompt was asked
twice (a style's "a <s> square" is a fidelity and a shape-edit prompt) the grid holds the second one's pictures
and both are read from it. Writes rejudge<suffix>.md: fidelity / editability per evaluation, stored and by each
judge, and how many of its fidelity pictures each judge reads as no shape ("blob"); then, per attribute, how many
pictures each judge reads otherwise than the first.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

from .common import RESULTS_DIR, argument_parser, command, print_and_write
from .judge_check import cut


def concept_grid(evaluation: Path, prompt: str, token: str) -> Path:
    """The grid an evaluation wrote for a filled `prompt` of the concept. Grids are named after the prompt's template,
    and filling one turns its "a" before a vowel into "an" (evaluate.fill), so both spellings are tried."""
    from textual_inversion.evaluate import grid_file_name

    for template in (prompt, re.sub(r"\ban (?=[aeiou])", "a ", prompt)):
        grid = evaluation / "grids" / "concept" / grid_file_name(template, token, token)
        if grid.is_file():
            return grid
    raise FileNotFoundError(f"{evaluation}: no grid of the prompt {prompt!r}")


def read_again(report_file: Path, judges: dict[str, object], changed: dict[str, Counter] | None = None
               ) -> dict[str, dict[str, float]]:
    """{judge name: {fidelity, editability, blobs}} for one evaluation, every judge reading the same pictures.

    `changed`, where given, counts per judge and attribute the pictures it reads otherwise than the first judge
    (and, under "pictures", how many were read)."""
    from textual_inversion.evaluate import mean, prompt_hits
    from textual_inversion.miniworld.judge import NO_SHAPE, predict
    from textual_inversion.miniworld.world import ATTRIBUTES

    report = json.loads(report_file.read_text())
    token, count = report["token"], report["num_images"]
    hits = {name: {"fidelity": [], "edit": [], "blobs": []} for name in judges}
    for record in report["prompts"]:
        if record["condition"] != "concept":
            continue
        grid = concept_grid(report_file.parent, record["prompt"], token)
        pictures = [cut({"grid": grid, "position": position, "count": count}) for position in range(count)]
        kind = "fidelity" if record["kind"] == "fidelity" else "edit"
        first = None
        for name, judge in judges.items():
            readings = predict(pictures, judge)
            hits[name][kind].extend(prompt_hits(readings, record["expected"]))
            if kind == "fidelity":
                hits[name]["blobs"].extend(reading["shape"] == NO_SHAPE for reading in readings)
            first = first or readings
            if changed is not None:
                changed[name]["pictures"] += len(readings)
                changed[name].update(k for mine, theirs in zip(readings, first, strict=True)
                                     for k in ATTRIBUTES if mine[k] != theirs[k])
    return {name: {"fidelity": mean(h["fidelity"]), "editability": mean(h["edit"]), "blobs": sum(h["blobs"]),
                   "pictures": len(h["fidelity"])} for name, h in hits.items()}


def table(workdir: Path, judges: dict[str, object]) -> list[str]:
    names = list(judges)
    lines = [f"# The evaluations under `{workdir.as_posix()}` read again by {len(names)} judges", "",
             f"Produced by `{command()}`. Fidelity / editability: as stored in each evaluation.json, then read again "
             "from its grids by each judge; \"blob\": the fidelity pictures a judge reads as no shape of the world.",
             "", "| evaluation | stored | " + " | ".join(names) + " | " + " | ".join(f"blob ({n})" for n in names)
             + " |", "|---|---|" + "---|" * (2 * len(names))]
    changed = {name: Counter() for name in names}
    evaluations = 0
    for report_file in sorted(workdir.rglob("evaluation.json")):
        stored = json.loads(report_file.read_text())
        if "prompts" not in stored or not any(r["condition"] == "concept" for r in stored["prompts"]):
            continue
        read = read_again(report_file, judges, changed)
        evaluations += 1
        where = report_file.parent.relative_to(workdir).as_posix()
        lines.append(f"| {where} | {stored['fidelity']:.2f} / {stored['editability']:.2f} | "
                     + " | ".join(f"{read[n]['fidelity']:.2f} / {read[n]['editability']:.2f}" for n in names) + " | "
                     + " | ".join(f"{read[n]['blobs']} of {read[n]['pictures']}" for n in names) + " |")
    from textual_inversion.miniworld.world import ATTRIBUTES

    pictures = changed[names[0]]["pictures"]
    lines += ["", f"Readings that differ from `{names[0]}`'s, per attribute, over the {evaluations} evaluations' "
              f"{pictures} pictures of prompts (a picture two prompts share is counted twice):", "",
              "| judge | " + " | ".join(ATTRIBUTES) + " |", "|---|" + "---|" * len(ATTRIBUTES)]
    lines += [f"| {name} | " + " | ".join(str(changed[name][k]) for k in ATTRIBUTES) + " |" for name in names[1:]]
    return lines


def add_judges_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--judge", action="append", required=True, metavar="NAME=FOLDER",
                        help="a judge's folder (judge.safetensors and config.json) and the name its column gets")


def named_judges(parser: argparse.ArgumentParser, named: list[str]) -> dict[str, object]:
    """{name: judge} from --judge NAME=FOLDER values, in their order; a bad value ends with a one-line error."""
    from textual_inversion.miniworld.judge import WEIGHTS, load_judge

    judges = {}
    for value in named:
        name, _, folder = value.partition("=")
        if not folder:
            parser.error(f"--judge {value}: write NAME=FOLDER, e.g. packaged=src/textual_inversion/miniworld/judge")
        if not (Path(folder) / WEIGHTS).is_file():
            parser.error(f"--judge {value}: no {WEIGHTS} in {folder}; name a judge's folder")
        judges[name] = load_judge(folder)
    return judges


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--workdir", required=True, help="a folder whose evaluation.json files (any depth) are read")
    add_judges_option(parser)
    parser.add_argument("--results-suffix", default="", help="write rejudge<suffix>.md")
    args = parser.parse_args()
    judges = named_judges(parser, args.judge)
    print_and_write(table(Path(args.workdir), judges), RESULTS_DIR / f"rejudge{args.results_suffix}.md")


if __name__ == "__main__":
    main()
