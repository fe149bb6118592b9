"""The attribute judge agrees with ground truth on fresh renders."""

import random

import pytest

from textual_inversion.miniworld.judge import JUDGE_DIR, load_judge, predict, score
from textual_inversion.miniworld.world import ATTRIBUTES, SHAPES, random_scene, render

pytestmark = pytest.mark.skipif(not (JUDGE_DIR / "judge.safetensors").exists(), reason="judge not trained")


def test_judge_agrees_with_ground_truth():
    rng = random.Random(2024)
    scenes = [random_scene(rng, shapes=SHAPES, hidden_colour_prob=1 / 9) for _ in range(100)]
    rates = score([render(s) for s in scenes], [s.attributes() for s in scenes])
    assert set(rates) == set(ATTRIBUTES)
    for k, v in rates.items():
        assert v >= 0.95, (k, v)


def test_predict_and_partial_expectations():
    scene = random_scene(random.Random(5))
    im = render(scene)
    (pred,) = predict([im])
    assert set(pred) == set(ATTRIBUTES)
    rates = score([im, im], {"colour": scene.colour})
    assert set(rates) == {"colour"}


def test_load_judge_is_cached():
    assert load_judge() is load_judge()
