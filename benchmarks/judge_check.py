"""How often the judge reads the model's own pictures right: a hand-checked sample of generated images.

The judge was trained and checked on clean renders (with mild blur and noise); the pictures it scores are the
diffusion model's, softer and sometimes half-formed. This draws a random sample of the pictures an evaluation
made (its grids, under --workdir), and works in two steps:

    python -m benchmarks.judge_check sheet [--workdir runs/concept-sweep] [--count 60]
        writes contact sheets (numbered, 3x enlarged) and judge_check.csv with the judge's reading of each
        picture and empty columns for a person's (with --fidelity: every fidelity picture, not a sample);
    python -m benchmarks.judge_check score --labels benchmarks/results/judge_check_labels.csv [--results-suffix _X]
        compares the person's reading (filled in from the sheets) with the judge's, per attribute, and writes
        benchmarks/results/judge_check<suffix>.md (a suffix per model: its pictures are that model's).

A person fills `shape`, `colour`, `pattern`, `background` of each row from the sheet ("?" where the picture
shows no clear value: those count as misreads of the judge, which always names one).
"""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

from .common import RESULTS_DIR, ROOT, argument_parser, command, print_and_write

CHECKED = ("shape", "colour", "pattern", "background")
SCALE = 3
PER_SHEET = 20


def sampled_pictures(workdir: Path, count: int, seed: int) -> list[dict]:
    """`count` pictures drawn at random from every evaluation under `workdir`: where each is, and the judge's reading."""
    pictures = every_picture(workdir)
    return random.Random(seed).sample(pictures, min(count, len(pictures)))


def every_picture(workdir: Path, kind: str | None = None) -> list[dict]:
    """Every picture of every evaluation under `workdir` (of prompts of `kind` only, e.g. "fidelity", where given), in
    order: where each is, and the judge's reading."""
    from textual_inversion.evaluate import grid_file_name

    pictures = []
    for report_file in sorted(workdir.rglob("evaluation.json")):
        report = json.loads(report_file.read_text())
        token = report["token"]
        # A prompt asked twice in one evaluation (a style's "a <s> square" is a fidelity and a shape-edit prompt)
        # has one grid, the last one written: only that record's readings belong to its pictures.
        last = {(prompt["condition"], prompt["prompt"]): prompt for prompt in report["prompts"]}
        for prompt in last.values():
            if kind is not None and prompt["kind"] != kind:
                continue
            template = prompt["prompt"]  # the filled prompt; its grid is named after the template with the token
            grid = report_file.parent / "grids" / prompt["condition"] / grid_file_name(
                template, token, token) if token in template else None
            if grid is None or not grid.is_file():
                continue
            for position, reading in enumerate(prompt["predicted"]):
                pictures.append({"grid": str(grid), "position": position, "count": len(prompt["predicted"]),
                                 "prompt": template, **{f"judge_{k}": reading[k] for k in CHECKED}})
    return pictures


def cut(picture: dict):
    """The picture at its position in its grid (grids are near-square, filled row by row)."""
    from PIL import Image

    grid = Image.open(picture["grid"]).convert("RGB")
    columns = math.ceil(math.sqrt(picture["count"]))
    side = grid.width // columns
    row, column = divmod(picture["position"], columns)
    return grid.crop((column * side, row * side, (column + 1) * side, (row + 1) * side))


def row_picture(row: dict):
    """The picture a sheet row (judge_check.csv) names, cut from its evaluation's grid."""
    count = json.loads((Path(row["grid"]).parents[2] / "evaluation.json").read_text())["num_images"]  # <run>/evaluation-N/grids/<condition>/<prompt>.png
    return cut({"grid": row["grid"], "position": int(row["position"]), "count": count})


def write_sheets(pictures: list[dict], folder: Path) -> list[Path]:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    sheets = []
    for first in range(0, len(pictures), PER_SHEET):
        chunk = pictures[first:first + PER_SHEET]
        side = cut(chunk[0]).width * SCALE
        columns = 5
        sheet = Image.new("RGB", (columns * (side + 8), math.ceil(len(chunk) / columns) * (side + 24)), "white")
        draw = ImageDraw.Draw(sheet)
        for offset, picture in enumerate(chunk):
            x, y = (offset % columns) * (side + 8), (offset // columns) * (side + 24)
            sheet.paste(cut(picture).resize((side, side)), (x, y + 20))
            draw.text((x + 2, y + 4), f"#{first + offset}", fill="black")
        path = folder / f"sheet-{first // PER_SHEET}.png"
        sheet.save(path)
        sheets.append(path)
    return sheets


def agrees(judge: str, hand: str) -> bool:
    """Whether the judge's reading is the hand's: its "blob" (no shape of the world) is the hand's "?"."""
    from textual_inversion.miniworld.judge import NO_SHAPE

    return judge == hand.strip() or (judge == NO_SHAPE and hand.strip() == "?")


def read_again(rows: list[dict], judge_folder: str | None) -> tuple[list[dict], dict[str, list[float]]]:
    """The rows with the judge's columns read again from their pictures by the judge in `judge_folder` (the packaged
    one if None), and its certainty for each name it gives (softmax probability), per attribute, in the rows' order."""
    from textual_inversion.miniworld.judge import load_judge, predict_with_certainty

    readings, certainty = predict_with_certainty([row_picture(row) for row in rows], load_judge(judge_folder))
    read = [{**row, **{f"judge_{k}": reading[k] for k in CHECKED}} for row, reading in zip(rows, readings, strict=True)]
    return read, certainty


def shown_path(path: Path) -> str:
    """`path` as the results file names it: from the repository's root where it lies inside it."""
    resolved = path.resolve()
    return resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else resolved.as_posix()


def score(labels: Path, judge_folder: str | None = None) -> list[str]:
    rows = list(csv.DictReader(labels.open()))
    # Where the sweep's pictures are here (--judge needs them), the judge reads them once, for its names and certainty.
    certainty = None
    pictures_here = all(Path(row["grid"]).is_file() for row in rows)
    if judge_folder or pictures_here:
        read_now, certainty = read_again(rows, judge_folder)
        if judge_folder:
            rows = read_now
        elif read_now != rows:  # the packaged judge is not the one the sheet was drawn with: its certainty is not theirs
            certainty = None
    read_by = (f" The judge's readings are those of `{judge_folder}`, read again from the pictures; the sheet's "
               "columns hold the judge's at the time the sample was drawn." if judge_folder else "")
    lines = [f"# The judge on the model's own pictures: {len(rows)} generated images read by hand", "",
             f"Produced by `{command()}` from `{shown_path(labels)}` (the sample, drawn by "
             "`judge_check sheet` from the concept sweep's evaluations, and the hand readings). A hand "
             "reading of \"?\" (no clear value in the picture) counts against the judge unless it reads the shape as "
             f"\"blob\" (no shape of the world, a value of the judge since 2026-12-06).{read_by}", "",
             "| attribute | judge agrees | misreads (judge -> by hand) |", "|---|---|---|"]
    read = tuple(attribute for attribute in CHECKED if any(row[attribute].strip() for row in rows))  # by hand
    for attribute in read:
        pairs = [(row[f"judge_{attribute}"], row[attribute].strip()) for row in rows if row[attribute].strip()]
        agree = sum(agrees(judge, hand) for judge, hand in pairs)
        misreads: dict[str, int] = {}
        for judge, hand in pairs:
            if not agrees(judge, hand):
                misreads[f"{judge} -> {hand}"] = misreads.get(f"{judge} -> {hand}", 0) + 1
        listed = ", ".join(f"{k} ({v})" for k, v in sorted(misreads.items(), key=lambda kv: -kv[1])) or "none"
        lines.append(f"| {attribute} | {agree} of {len(pairs)} ({agree / len(pairs):.0%}) | {listed} |")
    every = [all(agrees(row[f"judge_{a}"], row[a]) for a in read) for row in rows]
    lines += ["", f"Every attribute read by hand ({', '.join(read)}) right: {sum(every)} of {len(every)} "
              f"({sum(every) / len(every):.0%})."]
    if pictures_here:  # how sure was the judge?
        if certainty is not None:
            lines += ["", *confidence(rows, read, certainty)]
        else:
            lines += ["", "(The judge's certainty is not shown: the packaged judge reads these pictures otherwise than "
                      "the one the sheet was drawn with; `--judge` reads them again.)"]
        if "colour" in read:
            lines += ["", *colour_disagreements(rows)]
    return lines


def colour_disagreements(rows: list[dict]) -> list[str]:
    """For each picture where the hand and the judge name different colours, the mean colour of the shape's pixels
    (those far from the hand-read background's colour) and the palette colour nearest to it: an eye tells teal
    from blue or green less surely than the palette's distances do."""
    import numpy as np

    from textual_inversion.miniworld.world import BACKGROUND_RGB, COLOUR_RGB

    lines = ["Where the hand and the judge name different colours: the mean colour of the shape's pixels (further than "
             "60 from the background's colour) and the palette colour nearest to it.", "",
             "| picture | prompt | judge | by hand | shape's mean RGB | nearest palette colour |", "|---|---|---|---|---|---|"]
    nearer = {"judge": 0, "hand": 0, "neither": 0}
    for row in rows:
        if row["judge_colour"] == row["colour"].strip():
            continue
        pixels = np.asarray(row_picture(row), float)
        background = BACKGROUND_RGB.get(row["background"].strip(), BACKGROUND_RGB[row["judge_background"]])
        shape = pixels[np.linalg.norm(pixels - np.array(background, float), axis=2) > 60]
        if not len(shape):
            lines.append(f"| #{row['index']} | {row['prompt']} | {row['judge_colour']} | {row['colour']} | no shape | - |")
            continue
        mean = shape.mean(0)
        nearest = min(COLOUR_RGB, key=lambda name: np.linalg.norm(np.array(COLOUR_RGB[name], float) - mean))
        nearer["judge" if nearest == row["judge_colour"] else "hand" if nearest == row["colour"].strip()
               else "neither"] += 1
        lines.append(f"| #{row['index']} | {row['prompt']} | {row['judge_colour']} | {row['colour']} | "
                     f"{', '.join(f'{v:.0f}' for v in mean)} | {nearest} |")
    return lines + ["", f"The nearest palette colour is the judge's in {nearer['judge']}, the hand's in {nearer['hand']}, "
                        f"neither in {nearer['neither']}."]


def confidence(rows: list[dict], read: tuple[str, ...], certainty: dict[str, list[float]]) -> list[str]:
    """Whether the judge's own certainty (`read_again`'s) tells its misreads apart, so that it could answer "unclear"
    below a threshold instead of naming a blob."""
    import statistics

    lines = ["The judge's certainty (softmax probability of the name it gives) on the same pictures: a threshold "
             "that makes it answer \"unclear\" helps only if its misreads are less certain than its agreements.", "",
             "| attribute | certainty when it agrees: min, median | when it misreads: min, median, max | agreements "
             "below the misreads' median (lost with that threshold) |", "|---|---|---|---|"]
    for attribute in [a for a in ("shape", "pattern") if a in read]:
        agree = [c for c, row in zip(certainty[attribute], rows, strict=True)
                 if agrees(row[f"judge_{attribute}"], row[attribute])]
        miss = [c for c, row in zip(certainty[attribute], rows, strict=True)
                if not agrees(row[f"judge_{attribute}"], row[attribute])]
        if not miss:
            continue
        cut_at = statistics.median(miss)
        lines.append(f"| {attribute} | {min(agree):.3f}, {statistics.median(agree):.3f} | {min(miss):.3f}, {cut_at:.3f}, "
                     f"{max(miss):.3f} | {sum(c < cut_at for c in agree)} of {len(agree)} |")
    return lines + ["", *with_unclear(rows, certainty, read)]


UNCLEAR_BELOW = (0.9, 0.99, 0.999)


def with_unclear(rows: list[dict], certainty: dict[str, list[float]], read: tuple[str, ...] = CHECKED) -> list[str]:
    """The judge's agreement with the hand readings if it answered "unclear" ("?") below a certainty threshold."""
    lines = ["If the judge answered \"unclear\" (the hand reading's \"?\") below a certainty, its agreement with "
             "the hand readings would be:", "",
             "| answers \"unclear\" below | " + " | ".join(read) + " | all right |",
             "|---|" + "---|" * (len(read) + 1)]
    for threshold in (None, *UNCLEAR_BELOW):
        right = {attribute: [agrees(row[f"judge_{attribute}"] if threshold is None or sure >= threshold else "?",
                                    row[attribute]) for row, sure in zip(rows, certainty[attribute], strict=True)]
                 for attribute in read}
        every = sum(all(right[a][i] for a in read) for i in range(len(rows)))
        lines.append(f"| {'never (as now)' if threshold is None else threshold} | "
                     + " | ".join(f"{sum(v)} of {len(v)}" for v in right.values()) + f" | {every} of {len(rows)} |")
    return lines


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("step", choices=("sheet", "score"))
    parser.add_argument("--workdir", default="runs/concept-sweep")
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--fidelity", action="store_true",
                        help="with sheet: every fidelity picture under --workdir, in order, instead of --count at random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels", default=str(RESULTS_DIR / "judge_check_labels.csv"))
    parser.add_argument("--results-suffix", default="", help="with score: write judge_check<suffix>.md")
    parser.add_argument("--judge", help="with score: read the pictures again with the judge in this folder "
                                        "(default: the readings the sheet was drawn with)")
    args = parser.parse_args()
    if args.step == "score":
        print_and_write(score(Path(args.labels), args.judge), RESULTS_DIR / f"judge_check{args.results_suffix}.md")
        return
    pictures = (every_picture(Path(args.workdir), "fidelity") if args.fidelity
                else sampled_pictures(Path(args.workdir), args.count, args.seed))
    folder = Path(args.workdir) / "judge-check"
    for sheet in write_sheets(pictures, folder):
        print(sheet)
    with (folder / "judge_check.csv").open("w", newline="") as handle:
        fields = ["index", "prompt", "grid", "position", *[f"judge_{k}" for k in CHECKED], *CHECKED]
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for index, picture in enumerate(pictures):
            writer.writerow({"index": index, **picture, **{k: "" for k in CHECKED}})
    print(folder / "judge_check.csv")


if __name__ == "__main__":
    main()
