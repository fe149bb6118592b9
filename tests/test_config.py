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
    ({"validation_guidance": -1.0}, "--validation-guidance -1.0: cannot be negative"),
    ({"validation_sampler": "dpm"}, "--validation-sampler dpm: choose one of ddim, ddpm"),
    ({"snr_gamma": -5.0}, "--snr-gamma -5.0: cannot be negative"),
    ({"timestep_bias": "later"}, "--timestep-bias later with --timestep-bias-multiplier 1.0 has no effect"),
    ({"noise_sampling": "antithetic", "batch_size": 3}, "--batch-size 3 must be even"),
    ({"adam_beta1": 1.0}, "--adam-beta1 1.0: must be at least 0 and below 1"),
    ({"adam_beta2": -0.1}, "--adam-beta2 -0.1: must be at least 0 and below 1"),
    ({"adam_epsilon": 0.0}, "--adam-epsilon 0.0: must be above 0"),
    ({"timestep_bias": "later", "timestep_bias_multiplier": -2.0}, "--timestep-bias-multiplier -2.0: must be above 0"),
    ({"timestep_bias": "later", "timestep_bias_multiplier": 9.0, "timestep_bias_portion": 1.0},
     "--timestep-bias-portion 1.0: must be between 0 and 1"),
    ({"timestep_bias": "range", "timestep_bias_multiplier": 9.0, "timestep_bias_begin": 900,
      "timestep_bias_end": 900}, "--timestep-bias-begin 900 and --timestep-bias-end 900: need 0 <= begin < end"),
    ({"timestep_bias_steps": 200}, "--timestep-bias-steps 200 has no effect without --timestep-bias"),
    ({"timestep_bias": "later", "timestep_bias_multiplier": 3.0, "timestep_bias_steps": -1},
     "--timestep-bias-steps -1: must be 0"),
    ({"timestep_bias": "later", "timestep_bias_multiplier": 3.0, "steps": 300, "timestep_bias_steps": 300},
     "--timestep-bias-steps 300 covers all 300 steps"),
])
def test_train_config_rejects(change, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GOOD.replaced(**change).validate()


def test_defaults_are_valid_and_output_dir_follows_the_token():
    GOOD.validate()
    assert str(GOOD.resolved_output_dir()) == "runs/t"
    assert str(dataclasses.replace(GOOD, token="<my cat!>").resolved_output_dir()) == "runs/my-cat"


def test_steps_and_lr_default_per_method_and_an_explicit_value_wins():
    elsewhere = TrainConfig(model="some/model", images="pics", token="<t>", options={"init_token": "dog"})
    assert (elsewhere.steps, elsewhere.learning_rate()) == (500, 5e-3)
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


def test_on_miniworld_options_left_unset_take_the_methods_measured_values():
    """Textual inversion's (the demo's settings), pivotal tuning's and LoRA's; an explicit value wins; another model
    keeps the usual ones; an --init-embedding file gives its own count of vectors; a method with none measured keeps
    the usual ones."""
    assert (GOOD.options.vectors, GOOD.learning_rate(), GOOD.batch_size, GOOD.ema_decay, GOOD.steps) == (
        6, 0.1, 4, 0.99, 800)
    given = TrainConfig.from_values({"images": "pics", "token": "<t>", "init_token": "dog", "vectors": 2,
                                     "batch_size": 1, "ema_decay": 0.0, "lr": 0.05, "steps": 30})
    assert (given.options.vectors, given.learning_rate(), given.batch_size, given.ema_decay, given.steps) == (
        2, 0.05, 1, 0.0, 30)
    elsewhere = TrainConfig(model="some/model", images="pics", token="<t>", options={"init_token": "dog"})
    assert (elsewhere.options.vectors, elsewhere.batch_size, elsewhere.ema_decay) == (1, 1, 0.0)
    from_file = TrainConfig(images="pics", token="<t>", options={"init_embedding": "start.safetensors"})
    assert (from_file.options.vectors, from_file.batch_size) == (1, 4)
    pivotal = TrainConfig(images="pics", token="<t>", method="pivotal", options={"init_token": "dog"})
    assert (pivotal.options.vectors, pivotal.learning_rate(), pivotal.options.lora_lr, pivotal.options.rank,
            pivotal.options.ti_fraction, pivotal.batch_size, pivotal.ema_decay, pivotal.steps) == (
        6, 0.05, 1e-3, 8, 0.5, 4, 0.0, 800)
    lora = TrainConfig(images="pics", token="sks", method="lora")
    assert (lora.options.rank, lora.options.lora_layers, lora.lr_scheduler, lora.batch_size, lora.steps,
            lora.learning_rate()) == (8, "all", "cosine", 4, 3200, 1e-3)
    usual = TrainConfig(model="some/model", images="pics", token="sks", method="lora")
    assert (usual.options.rank, usual.options.lora_layers, usual.lr_scheduler, usual.batch_size, usual.ema_decay,
            usual.steps, usual.learning_rate()) == (4, "attention", "constant", 1, 0.0, 500, 1e-4)
    # The hypernetwork's fine-tune keeps its own values: its predictions are the attention's adapters.
    hyper = TrainConfig(images="pics", token="sks", method="hyperdreambooth")
    assert (hyper.options.rank, hyper.options.lora_layers, hyper.lr_scheduler, hyper.steps) == (
        4, "attention", "constant", 40)


def test_a_methods_options_are_its_own():
    lora = TrainConfig.from_values({"images": "pics", "token": "sks", "method": "lora", "rank": "2"}, "--config x")
    assert lora.options.rank == 2 and (lora.steps, lora.learning_rate()) == (3200, 1e-3)
    with pytest.raises(UserError, match="^--config x: --rank is an option of lora, pivotal, hyperdreambooth, "
                                        "not of --method textual-inversion$"):
        TrainConfig.from_values({"images": "pics", "token": "<t>", "init_token": "dog", "rank": 8}, "--config x")
    with pytest.raises(UserError, match="--vectors is an option of textual-inversion, pivotal, not of --method lora"):
        TrainConfig(images="pics", token="sks", method="lora", options={"vectors": 2})
    with pytest.raises(UserError, match=r"options: LoRAOptions are not the options of --method textual-inversion"):
        TrainConfig(images="pics", token="<t>", options=lora.options)
    with pytest.raises(UserError, match="unknown option --stepz; `textual-inversion train --help` lists them"):
        TrainConfig.from_values({"images": "pics", "token": "<t>", "stepz": 3})
    with pytest.raises(UserError, match="--method 'loar': choose one of textual-inversion, dreambooth, lora"):
        TrainConfig(images="pics", token="<t>", method="loar")
    # The web page's form sends every method's fields: those of other methods are left out there.
    form = TrainConfig.from_values({"images": "pics", "token": "sks", "method": "lora", "vectors": 3}, lenient=True)
    assert form.options == TrainConfig(images="pics", token="sks", method="lora").options


def test_switching_method_keeps_the_options_both_have():
    pivotal = TrainConfig(images="pics", token="<t>", method="pivotal", options={"init_token": "dog", "rank": 2})
    lora = pivotal.replaced(method="lora", lr=0.01)
    assert (lora.method, lora.options.rank, lora.lr, lora.token) == ("lora", 2, 0.01, "<t>")
    assert pivotal.replaced(vectors=3).options.vectors == 3 and pivotal.options.vectors == 6  # miniworld's default


def test_a_method_cannot_redefine_another_methods_option():
    from dataclasses import dataclass

    from textual_inversion.methods import register
    from textual_inversion.methods.lora import LoRA
    from textual_inversion.options import option

    @dataclass
    class Clash(LoRA.options_class):
        rank: str = option("four", "a rank of another kind")

    class ClashingMethod(LoRA):
        name, options_class = "clashing", Clash

    with pytest.raises(ValueError, match="method clashing: option rank differs from LoRAOptions"):
        register(ClashingMethod)
    from textual_inversion.methods.dreambooth import DreamBooth

    class Impostor(DreamBooth):
        name = "lora"

    with pytest.raises(ValueError, match="method lora: the name is taken by LoRA"):
        register(Impostor)


def test_an_option_given_no_value_keeps_its_default():
    """None (an empty form field; the fuzz test found it crashing validate) for an option that cannot be None."""
    config = TrainConfig.from_values({"images": "pics", "token": "<t>", "vectors": None, "steps": None,
                                      "init_token": "dog"})
    assert config.options.vectors == TrainConfig.from_values({"images": "pics", "token": "<t>"}).options.vectors
    assert config.steps == TrainConfig(images="pics", token="<t>").steps  # optional: None means the method's own
    config.validate()
