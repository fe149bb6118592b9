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
