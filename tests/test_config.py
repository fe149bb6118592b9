"""Config validation: each bad value names its option and what to do."""

import dataclasses

import pytest

from textual_inversion.config import GenerateConfig, TrainConfig
from textual_inversion.errors import UserError

GOOD = TrainConfig(images="pics", token="<t>", options={"init_token": "dog"})


@pytest.mark.parametrize("change,message", [
    ({"images": ""}, "--images is required"),
    ({"token": "my cat"}, "one new word without spaces"),
    ({"init_token": " "}, "--init-token is required"),
    ({"vectors": 0}, "--vectors 0: must be at least 1"),
    ({"vectors": 500}, "--vectors 500: a prompt holds at most 75 tokens"),
    ({"steps": 0}, "--steps 0"),
    ({"lr": 5.0}, "--lr 5.0: must be between 0 and 1"),
    ({"resolution": 100}, "--resolution 100: must be a multiple of 8"),
    ({"crop": "middle"}, "--crop 'middle': choose one of center, random"),
    ({"mixed_precision": "fp8"}, "--mixed-precision 'fp8'"),
    ({"validation_prompt": "a photo of a cat"}, "does not contain the token <t>"),
    ({"lr_warmup_steps": 10}, "--lr-warmup-steps 10 has no effect with --lr-scheduler constant"),
])
def test_train_config_rejects(change, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GOOD.replaced(**change).validate()


def test_defaults_are_valid_and_output_dir_follows_the_token():
    GOOD.validate()
    assert str(GOOD.resolved_output_dir()) == "runs/t"
    assert str(dataclasses.replace(GOOD, token="<my cat!>").resolved_output_dir()) == "runs/my-cat"


def test_steps_and_lr_default_per_method_and_an_explicit_value_wins():
    assert (GOOD.steps, GOOD.learning_rate()) == (500, 5e-3)
    fast = TrainConfig(images="pics", token="sks", method="hyperdreambooth")
    assert (fast.steps, fast.learning_rate()) == (40, 3e-3)  # the paper's fast fine-tune; lr tuned on miniworld
    explicit = TrainConfig(images="pics", token="sks", method="hyperdreambooth", steps=100, lr=1e-3)
    assert (explicit.steps, explicit.learning_rate()) == (100, 1e-3)


@pytest.mark.parametrize("change,message", [
    ({"prompt": ""}, "--prompt is required"), ({"num_images": 0}, "--num-images 0"),
    ({"width": 100}, "--width 100: must be a positive multiple of 8"), ({"guidance": -1.0}, "--guidance"),
])
def test_generate_config_rejects(change, message):
    with pytest.raises(UserError, match=message):
        dataclasses.replace(GenerateConfig(prompt="a cat"), **change).validate()


def test_token_never_escapes_the_runs_folder():
    for token in ("../../etc/passwd", "/abs/path", "<..>", "a/../../b"):
        path = dataclasses.replace(GOOD, token=token).resolved_output_dir()
        assert path.parent.as_posix() == "runs" and ".." not in path.parts and "/" not in path.name
