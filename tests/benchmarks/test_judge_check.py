"""judge_check draws its sheets' pictures from the evaluations' grids: a random sample, or every fidelity picture."""

import json

from benchmarks.judge_check import every_picture, sampled_pictures
from PIL import Image

from textual_inversion.evaluate import grid_file_name
from textual_inversion.generation import save_grid

READING = {"shape": "star", "colour": "red", "pattern": "solid", "background": "grey", "size": "small"}


def test_every_fidelity_picture_in_order_or_a_sample_of_all(tmp_path):
    token, prompts = "<red-star>", []
    for prompt, kind in (("<red-star>", "fidelity"), ("a <red-star> on a black background", "edit:background")):
        save_grid([Image.new("RGB", (64, 64))] * 2, tmp_path / "grids" / "concept" / grid_file_name(prompt, token, token))
        prompts.append({"condition": "concept", "prompt": prompt, "kind": kind, "predicted": [READING, READING]})
    (tmp_path / "evaluation.json").write_text(json.dumps({"token": token, "prompts": prompts}))
    fidelity = every_picture(tmp_path, "fidelity")
    assert [(p["prompt"], p["position"]) for p in fidelity] == [("<red-star>", 0), ("<red-star>", 1)]
    assert fidelity[0]["judge_shape"] == "star" and fidelity[0]["count"] == 2
    assert len(every_picture(tmp_path)) == 4
    assert len(sampled_pictures(tmp_path, 3, seed=0)) == 3


def test_score_compares_hand_and_judge_and_reads_again_with_a_judge_folder(tmp_path):
    import csv
    import random

    from benchmarks.judge_check import CHECKED, score

    from textual_inversion.miniworld.judge import JUDGE_DIR, predict
    from textual_inversion.miniworld.world import random_scene, render

    rng = random.Random(0)
    scenes = [random_scene(rng, shapes=("circle",), colours=("red",), patterns=("solid",)) for _ in range(2)]
    pictures = [render(scene) for scene in scenes]
    readings = predict(pictures)
    run, token = tmp_path / "run" / "evaluation-1", "<red-circle>"
    grid = run / "grids" / "concept" / grid_file_name(token, token, token)
    save_grid(pictures, grid)
    (run / "evaluation.json").write_text(json.dumps({"token": token, "num_images": 2, "prompts": []}))
    labels = tmp_path / "labels.csv"

    def write_labels(judge_shapes):
        with labels.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["index", "prompt", "grid", "position",
                                                        *[f"judge_{k}" for k in CHECKED], *CHECKED])
            writer.writeheader()
            for index, (reading, judge_shape) in enumerate(zip(readings, judge_shapes, strict=True)):
                writer.writerow({"index": index, "prompt": token, "grid": str(grid), "position": index,
                                 **{f"judge_{k}": reading[k] for k in CHECKED}, "judge_shape": judge_shape,
                                 "shape": "circle", "colour": "red", "pattern": "", "background": ""})

    write_labels([r["shape"] for r in readings])  # the sheet's columns are the packaged judge's own readings
    assert [r["shape"] for r in readings] == ["circle", "circle"]
    text = "\n".join(score(labels))
    assert "| shape | 2 of 2 (100%) | none |" in text and "The judge's certainty" in text
    write_labels(["square", "circle"])  # a sheet drawn by another judge
    text = "\n".join(score(labels))
    assert "| shape | 1 of 2 (50%) | square -> circle (1) |" in text and "certainty is not shown" in text
    text = "\n".join(score(labels, str(JUDGE_DIR)))  # read again: the packaged judge's names, and its certainty
    assert "| shape | 2 of 2 (100%) | none |" in text and "The judge's certainty" in text
