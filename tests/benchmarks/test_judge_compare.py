"""judge_compare counts, per judge, the hand-read pictures it agrees with, and where it reads otherwise than the first."""

import csv
import random
from dataclasses import replace

import pytest
from benchmarks.judge_compare import compare
from benchmarks.rejudge import concept_grid

from textual_inversion.miniworld.judge import JUDGE_DIR, JudgeNet, load_judge
from textual_inversion.miniworld.world import random_scene, render

from .test_rejudge import write_evaluation

needs_judge = pytest.mark.skipif(not (JUDGE_DIR / "judge.safetensors").exists(), reason="judge not trained")
COLUMNS = ("index", "prompt", "grid", "position", "shape", "colour", "pattern", "background")


@needs_judge
def test_compare_counts_agreements_with_the_hand_per_judge(tmp_path):
    rng = random.Random(3)
    scenes = [random_scene(rng, shapes=("star",), colours=("red",), sizes=("big",), patterns=("solid",))
              for _ in range(4)]
    pictures = [render(s) for s in scenes[:2]] + [render(replace(s, radius=3.0)) for s in scenes[2:]]  # 2 dots
    write_evaluation(tmp_path / "run", "<red-star>", [("<red-star>", "fidelity", {"shape": "star"}, pictures)])
    grid = concept_grid(tmp_path / "run", "<red-star>", "<red-star>")
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for position, (scene, hand) in enumerate(zip(scenes, ["star", "star", "?", "star"], strict=True)):
            writer.writerow({"index": position, "prompt": "<red-star>", "grid": grid, "position": position,
                             "shape": hand, "colour": "red", "pattern": "", "background": scene.background})
    untrained = JudgeNet()  # random weights: reads otherwise than the packaged judge
    lines = compare([labels], {"packaged": load_judge(), "random": untrained.eval()})
    table = "\n".join(lines)
    assert "| labels | shape | 3 of 4 |" in table  # two stars, one dot read "blob" = "?", one dot the hand called a star
    assert "| labels | colour | 4 of 4 |" in table and "| labels | pattern |" not in table  # pattern not read by hand
    assert "| **all samples** | every attribute | **3 of 4** |" in table
    assert lines[-1].startswith("| random | ")
