"""The attribute judge agrees with ground truth on fresh renders."""

import random

import pytest
import torch
from PIL import Image

from textual_inversion.miniworld.judge import (
    JUDGE_DIR,
    NO_SHAPE,
    JudgeNet,
    load_judge,
    main,
    no_shape_picture,
    predict,
    predict_with_certainty,
    score,
    train,
)
from textual_inversion.miniworld.world import (
    ATTRIBUTES,
    BACKGROUND_RGB,
    SHAPES,
    VOCAB,
    random_scene,
    render,
    shape_mask,
)

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


def test_predict_with_certainty_gives_predicts_names_and_a_probability_for_each():
    rng = random.Random(6)
    images = [render(random_scene(rng)) for _ in range(3)]
    names, certainty = predict_with_certainty(images)
    assert names == predict(images)
    assert set(certainty) == set(ATTRIBUTES)
    assert all(len(values) == 3 and all(0.5 < v <= 1.0 for v in values) for values in certainty.values())  # clean renders


def test_load_judge_is_cached():
    assert load_judge() is load_judge()


def test_judge_reads_dots_smudges_and_lumps_as_no_shape():
    """The judge's own "blob": pictures of no shape of the world, which it used to name as the nearest shape."""
    rng = random.Random(99)
    pictures = [no_shape_picture(rng) for _ in range(60)]
    assert all(attributes["shape"] == NO_SHAPE for _, attributes in pictures)
    read = predict([image for image, _ in pictures])
    assert sum(p["shape"] == NO_SHAPE for p in read) >= 0.9 * len(read)


def test_a_mask_replaces_the_scenes_shape():
    scene = random_scene(random.Random(3))
    assert render(scene, shape_mask(scene.shape, scene.x * 4, scene.y * 4, scene.radius * 4, 256)) == render(scene)
    empty = Image.new("L", (256, 256), 0)
    assert render(scene, empty).getcolors() == [(64 * 64, BACKGROUND_RGB[scene.background])]


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("distil", [False, True])
def test_training_one_head_from_a_judge_keeps_or_distils_the_rest(distil):
    """--learn shape alone leaves the features and the other heads as they were; --distil lets the features learn
    and trains the other heads towards the former judge's readings."""
    torch.manual_seed(0)
    former = JudgeNet(VOCAB, widths=(4, 4, 4, 4)).eval()  # a judge without "blob", like the one shipped until 2026-12-06
    net, accuracy = train(steps=3, batch=4, start=former, learn=("shape",), distil=distil)
    assert net.vocab["shape"][-1] == NO_SHAPE and NO_SHAPE in accuracy
    assert _same(net.features, former.features) is not distil
    assert _same(net.heads["colour"], former.heads["colour"]) is not distil
    assert not torch.equal(net.heads["shape"].weight[:-1], former.heads["shape"].weight)


def test_distil_without_a_former_judge_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit):
        main(["--train", "--distil"])
    assert "--start FOLDER" in capsys.readouterr().err
