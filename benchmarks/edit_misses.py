"""What an edit prompt's missed pictures got wrong: the concept's own attributes, or the edit.

    python -m benchmarks.edit_misses runs/concept-sweep/*/lora-all-seed*/evaluation-6400 [--report FILE]

Reads each evaluation folder's evaluation.json (as `evaluate` and benchmarks/concept_sweep.py write it) and counts,
over the learned token's edit prompts, the pictures the judge did not read as asked, and among them how many
missed each attribute: the concept's own (its pattern, colour, shape) or the edited one (the background, size,
colour or shape the prompt asked for). Misses of the concept's own attributes say the concept is lost once the
prompt asks for more (the base model or the method); misses of the edit say the token overrides the prompt.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .common import RESULTS_DIR, argument_parser, command, print_and_write


def edit_misses(evaluation: dict) -> tuple[int, int, Counter, Counter]:
    """(edit pictures, pictures missed, misses per concept attribute, misses per edited attribute) of the token."""
    pictures, missed, own, edited = 0, 0, Counter(), Counter()
    for record in evaluation["prompts"]:
        if record["condition"] != "concept" or not record["kind"].startswith("edit:"):
            continue
        edit = record["kind"].split(":", 1)[1]
        for read in record["predicted"]:
            pictures += 1
            wrong = [k for k, v in record["expected"].items() if read[k] != v]
            missed += bool(wrong)
            own.update(k for k in wrong if k != edit)
            edited.update(k for k in wrong if k == edit)
    return pictures, missed, own, edited


def row(folder: Path) -> str:
    evaluation = json.loads((folder / "evaluation.json").read_text())
    pictures, missed, own, edited = edit_misses(evaluation)

    def shares(counts: Counter) -> str:
        return ", ".join(f"{k} {n}" for k, n in counts.most_common()) or "-"

    return (f"| {folder} | {evaluation['editability']:.2f} | {pictures} | {missed} | {shares(own)} | "
            f"{shares(edited)} |")


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("folders", nargs="+", help="evaluation folders, each holding an evaluation.json")
    parser.add_argument("--report", default=str(RESULTS_DIR / "edit_misses.md"))
    args = parser.parse_args()
    lines = ["# What the missed edit pictures got wrong", "",
             f"Produced by `{command()}`. Per evaluation: the token's editability, its edit pictures, those the judge "
             "did not read as asked, and how many of those missed each of the concept's own attributes and the "
             "edited one (a picture can miss several).", "",
             "| evaluation | editability | edit pictures | missed | concept's attribute missed | edit missed |",
             "|---|---|---|---|---|---|", *(row(Path(f)) for f in args.folders)]
    print_and_write(lines, Path(args.report))


if __name__ == "__main__":
    main()
