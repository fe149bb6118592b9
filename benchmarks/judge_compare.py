"""Judges side by side on every hand-read sample: how many of each attribute each agrees with the hand on.

    python -m benchmarks.judge_compare --judge shipped=src/textual_inversion/miniworld/judge \\
        --judge distilled=runs/session/judge-distil [--labels A.csv B.csv ...] [--results-suffix _X]

Each labels file is a `judge_check` sample with a person's readings; every judge reads its pictures again from the
grids. A change of judge is kept only where it agrees with the hand more often, so this is the table that decides,
and the samples it is decided on are named in it. The second table counts, for the attributes a new judge should
read as before (colour, background, size, pattern), the pictures where each judge's reading differs from the
first judge's.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .common import RESULTS_DIR, ROOT, argument_parser, command, print_and_write
from .judge_check import CHECKED, agrees, row_picture
from .rejudge import add_judges_option, named_judges

HAND_SAMPLES = ("judge_check_labels_2a05c6767420493f.csv", "judge_check_labels_shapes_2a05c6767420493f.csv",
                "judge_check_labels_stars_2a05c6767420493f.csv", "judge_check_labels_refined_star_2a05c6767420493f.csv",
                "judge_check_labels_refined_blue_star_2a05c6767420493f.csv")
HELD = ("colour", "background", "size", "pattern")


def agreed(rows: list[dict], readings: list[dict], attribute: str) -> tuple[int, int]:
    """(readings that agree with the hand on `attribute`, rows the hand read it on)."""
    pairs = [(reading[attribute], row[attribute].strip()) for row, reading in zip(rows, readings, strict=True)
             if row[attribute].strip()]
    return sum(agrees(judge, hand) for judge, hand in pairs), len(pairs)


def compare(samples: list[Path], judges: dict[str, object]) -> list[str]:
    from textual_inversion.miniworld.judge import predict

    names = list(judges)
    lines = [f"# {len(names)} judges on {len(samples)} hand-read samples of generated pictures", "",
             f"Produced by `{command()}`. Per sample and judge: pictures whose shape, colour, background and pattern "
             "the judge reads as the hand did (a hand's \"?\" is the judge's \"blob\"), and every attribute the hand "
             "read right at once.", "",
             "| sample | attribute | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    totals = {name: {a: [0, 0] for a in (*CHECKED, "all")} for name in names}
    changed = {name: {a: 0 for a in HELD} for name in names}
    pictures = 0
    for sample in samples:
        rows = list(csv.DictReader(sample.open()))
        images = [row_picture(row) for row in rows]
        readings = {name: predict(images, judge) for name, judge in judges.items()}
        pictures += len(rows)
        read = [a for a in CHECKED if any(row[a].strip() for row in rows)]
        for attribute in read:
            cells = []
            for name in names:
                hit, total = agreed(rows, readings[name], attribute)
                totals[name][attribute][0] += hit
                totals[name][attribute][1] += total
                cells.append(f"{hit} of {total}")
            lines.append(f"| {sample.stem} | {attribute} | " + " | ".join(cells) + " |")
        cells = []
        for name in names:
            every = sum(all(agrees(reading[a], row[a]) for a in read if row[a].strip())
                        for row, reading in zip(rows, readings[name], strict=True))
            totals[name]["all"][0] += every
            totals[name]["all"][1] += len(rows)
            cells.append(f"{every} of {len(rows)}")
            for attribute in HELD:
                changed[name][attribute] += sum(mine[attribute] != first[attribute] for mine, first
                                                in zip(readings[name], readings[names[0]], strict=True))
        lines.append(f"| {sample.stem} | every attribute | " + " | ".join(cells) + " |")
    for attribute in (*CHECKED, "all"):
        label = "every attribute" if attribute == "all" else attribute
        lines.append(f"| **all samples** | {label} | "
                     + " | ".join(f"**{totals[n][attribute][0]} of {totals[n][attribute][1]}**" for n in names) + " |")
    lines += ["", f"Readings that differ from `{names[0]}`'s on the same {pictures} pictures:", "",
              "| judge | " + " | ".join(HELD) + " |", "|---|" + "---|" * len(HELD)]
    lines += [f"| {name} | " + " | ".join(str(changed[name][a]) for a in HELD) + " |" for name in names[1:]]
    return lines


def main() -> None:
    parser = argument_parser(__doc__)
    add_judges_option(parser)
    parser.add_argument("--labels", nargs="+", default=[str(RESULTS_DIR / name) for name in HAND_SAMPLES],
                        help="judge_check labels files (the hand-read samples)")
    parser.add_argument("--results-suffix", default="", help="write judge_compare<suffix>.md")
    args = parser.parse_args()
    judges = named_judges(parser, args.judge)
    samples = [Path(labels) for labels in args.labels]
    for sample in samples:
        if not sample.is_file():
            parser.error(f"--labels {sample}: no such file (a judge_check labels file)")
        missing = [row["grid"] for row in csv.DictReader(sample.open()) if not Path(row["grid"]).is_file()]
        if missing:
            parser.error(f"--labels {sample}: its pictures' grid {missing[0]} is not here; the sample's evaluations "
                         f"must be on disk (under {ROOT / 'runs'})")
    print_and_write(compare(samples, judges), RESULTS_DIR / f"judge_compare{args.results_suffix}.md")


if __name__ == "__main__":
    main()
