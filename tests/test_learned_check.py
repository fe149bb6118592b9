"""--stop-when-learned: what the judge finds the pictures share, how a check scores a pipeline, where a run stops."""

import dataclasses
import json
from pathlib import Path

import pytest

from textual_inversion import TrainConfig, UserError, train
from textual_inversion.data import read_training_data
from textual_inversion.learned_check import (
    CHECK_IMAGES,
    CHECK_SEEDS,
    LearnedCheck,
    learned_check,
    learned_share,
    should_stop,
)
from textual_inversion.miniworld.judge import load_judge

CONCEPTS = Path(__file__).resolve().parents[1] / "examples" / "concepts"


def test_the_check_asks_for_what_every_picture_shows():
    """hidden-colour: five teal circles on four backgrounds, big and small; the check wants the teal circle."""
    data = read_training_data(CONCEPTS / "hidden-colour", "<teal-thing>", "object")
    check = learned_check(data.images, "<teal-thing>", "object", seed=3)
    assert check.shared == {"shape": "circle", "colour": "teal", "pattern": "solid"}
    assert len(check.prompts) == CHECK_IMAGES and check.seed == CHECK_SEEDS + 3
    assert check.prompts[:4] == ["<teal-thing>", "a <teal-thing>", "a photo of a <teal-thing>",
                                 "a picture of the <teal-thing>"] == check.prompts[4:]

    style = read_training_data(CONCEPTS / "dotted-style", "<dotted>", "style")
    check = learned_check(style.images, "<dotted>", "style", seed=0)
    assert check.shared == {"pattern": "dotted"} and check.prompts[0] == "a <dotted> circle"


def test_a_run_stops_after_enough_passing_checks_in_a_row():
    assert not should_stop([], 0.75, 2) and not should_stop([0.875], 0.75, 2)
    assert not should_stop([0.875, 0.5], 0.75, 2) and not should_stop([0.5, 0.75, 0.625], 0.75, 2)
    assert should_stop([0.0, 0.75, 0.875], 0.75, 2) and not should_stop([0.75, 0.875], 0.9, 2)
    assert should_stop([0.5, 0.875], 0.875, 1) and not should_stop([0.875, 0.75], 0.875, 1)


def test_by_default_one_check_with_seven_of_eight_images_stops_a_run(tmp_path, monkeypatch):
    from textual_inversion import training

    shares = iter([0.75, 0.875])
    monkeypatch.setattr(training, "learned_share", lambda pipe, check: next(shares))
    config = TrainConfig.from_values(dict(
        images=str(CONCEPTS / "hidden-colour"), token="<teal-thing>", init_token="circle", steps=10, batch_size=1,
        stop_when_learned=True, learned_every=2, checkpoint_every=0, output_dir=str(tmp_path / "run")))
    assert (config.learned_share, config.learned_passes) == (0.875, 1)
    result = train(config)
    assert result.steps == 4 and result.stopped_early  # 6 of 8 at step 2 goes on; 7 of 8 at step 4 stops


def test_pictures_with_nothing_in_common_are_refused(monkeypatch):
    from textual_inversion.miniworld import judge

    readings = iter([{"shape": "circle", "colour": "red"}, {"shape": "square", "colour": "blue"}])
    monkeypatch.setattr(judge, "predict", lambda images, net: [next(readings) for _ in images])
    with pytest.raises(UserError, match="--stop-when-learned: miniworld's judge finds no .* that all 2 pictures share"):
        learned_check([None, None], "<t>", "object", seed=0)


def test_a_check_counts_the_images_that_show_all_shared_attributes():
    """With the plain words the model knows, its images show them; another colour, they do not."""
    from textual_inversion.models import load_pipeline

    pipe = load_pipeline("miniworld")
    own = pipe.scheduler
    prompts = ["a big red circle on a white background", "a small red circle on a black background"] * 4
    red = LearnedCheck(prompts, {"shape": "circle", "colour": "red"}, seed=0, judge=load_judge())
    assert learned_share(pipe, red) >= 0.75
    assert learned_share(pipe, dataclasses.replace(red, shared={"colour": "blue"})) == 0.0
    assert pipe.scheduler is own  # the check's sampler only for the check


def test_a_run_stops_at_the_checks_that_pass(tmp_path, monkeypatch):
    from textual_inversion import training

    shares = iter([0.875, 0.5, 0.75, 0.875])
    monkeypatch.setattr(training, "learned_share", lambda pipe, check: next(shares))
    config = TrainConfig.from_values(dict(
        images=str(CONCEPTS / "hidden-colour"), token="<teal-thing>", init_token="circle", steps=10, batch_size=1,
        stop_when_learned=True, learned_every=2, learned_share=0.75, learned_passes=2, checkpoint_every=0,
        output_dir=str(tmp_path / "run")))
    result = train(config)
    assert result.steps == 8 and result.stopped_early  # one pass alone (step 2) does not stop it; two in a row do
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["learned_checks"] == [[2, 0.875], [4, 0.5], [6, 0.75], [8, 0.875]]
    assert run["metadata"]["stopped_early"] == "True"


def test_only_miniworld_can_be_checked_and_the_share_is_a_fraction(tiny_sd1_path):
    base = dict(images="pics", token="<t>", init_token="dog")
    with pytest.raises(UserError, match=r"^--stop-when-learned reads images with miniworld's judge, which knows only "
                                        r"miniworld; with --model .* use --early-stop-window"):
        TrainConfig.from_values(dict(base, model=tiny_sd1_path, stop_when_learned=True)).validate()
    for share in (0.0, 1.5):
        with pytest.raises(UserError, match=f"--learned-share {share}: must be above 0 and at most 1"):
            TrainConfig.from_values(dict(base, learned_share=share)).validate()
    with pytest.raises(UserError, match="--learned-every 0: must be at least 1"):
        TrainConfig.from_values(dict(base, learned_every=0)).validate()
    with pytest.raises(UserError, match="--learned-passes 0: must be at least 1"):
        TrainConfig.from_values(dict(base, learned_passes=0)).validate()


def test_a_resumed_run_remembers_its_checks(tmp_path, monkeypatch):
    """Stopped after a passing check, resumed: one more pass is the second in a row."""
    import threading

    from textual_inversion import training

    shares = iter([0.5, 0.875, 0.875])
    monkeypatch.setattr(training, "learned_share", lambda pipe, check: next(shares))
    config = TrainConfig.from_values(dict(
        images=str(CONCEPTS / "hidden-colour"), token="<teal-thing>", init_token="circle", steps=10, batch_size=1,
        stop_when_learned=True, learned_every=2, learned_passes=2, checkpoint_every=0, output_dir=str(tmp_path / "run")))
    stop = threading.Event()
    first = train(config, stop=stop, on_step=lambda step, loss: stop.set() if step == 5 else None)
    assert first.stopped and first.steps == 5
    resumed = train(dataclasses.replace(config, resume=True))
    assert resumed.steps == 6 and resumed.stopped_early
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["learned_checks"] == [[2, 0.5], [4, 0.875], [6, 0.875]]
