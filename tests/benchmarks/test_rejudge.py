"""rejudge reads an evaluation's pictures again from its grids; judge_check counts the judge's "blob" as the hand's "?"."""

import json
import random
from collections import Counter
from dataclasses import replace

import pytest
from benchmarks.judge_check import agrees
from benchmarks.rejudge import read_again

from textual_inversion.evaluate import grid_file_name
from textual_inversion.generation import save_grid
from textual_inversion.miniworld.judge import JUDGE_DIR, NO_SHAPE, load_judge
from textual_inversion.miniworld.world import random_scene, render

needs_judge = pytest.mark.skipif(not (JUDGE_DIR / "judge.safetensors").exists(), reason="judge not trained")


def write_evaluation(folder, token, records):
    """An evaluation.json and its concept grids: `records` are (prompt, kind, expected, pictures)."""
    prompts = []
    for prompt, kind, expected, pictures in records:
        save_grid(pictures, folder / "grids" / "concept" / grid_file_name(prompt, token, token))
        prompts.append({"condition": "concept", "prompt": prompt, "kind": kind, "expected": expected,
                        "predicted": [], "hit_rate": 0.0})
    (folder / "evaluation.json").write_text(json.dumps({"token": token, "num_images": len(records[0][3]),
                                                        "fidelity": 0.0, "editability": 0.0, "prompts": prompts}))
    return folder / "evaluation.json"


@needs_judge
def test_read_again_scores_the_grids_pictures_and_counts_blobs(tmp_path):
    rng = random.Random(7)
    stars = [random_scene(rng, shapes=("star",), colours=("red",), sizes=("big",), patterns=("solid",))
             for _ in range(4)]
    # Two clear stars and two of the same scenes shrunk to dots of radius 3: no shape of the world.
    fidelity = [render(stars[0]), render(stars[1]), render(replace(stars[2], radius=3.0)),
                render(replace(stars[3], radius=3.0))]
    on_black = [render(replace(s, background="black")) for s in stars]
    report = write_evaluation(tmp_path, "<red-star>", [
        ("<red-star>", "fidelity", {"shape": "star", "colour": "red"}, fidelity),
        ("a <red-star> on a black background", "edit:background", {"shape": "star", "background": "black"}, on_black),
    ])
    changed = {"packaged": Counter(), "again": Counter()}
    read = read_again(report, {"packaged": load_judge(), "again": load_judge()}, changed)
    assert read["packaged"] == {"fidelity": 0.5, "editability": 1.0, "blobs": 2, "pictures": 4}
    assert changed["again"] == Counter(pictures=8)  # both prompts' pictures read, none read otherwise


def test_the_judges_blob_is_the_hands_question_mark():
    assert agrees(NO_SHAPE, "?") and agrees("star", " star ")
    assert not agrees("star", "?") and not agrees(NO_SHAPE, "star")
