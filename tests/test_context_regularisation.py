"""--context-weight: CoRe's text-side term keeps the words after the token meaning what they mean."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from textual_inversion import TrainConfig, UserError, train
from textual_inversion.context_regularisation import context_penalty, positions_after
from textual_inversion.methods.textual_inversion import TextualInversion
from textual_inversion.models import load_pipeline


def test_positions_after_the_token_line_up_with_the_words_after_the_plain_word():
    # "a <t> <t>_1 on red" against "a big fat cat on red": the plain words take 3 ids where the token takes 2
    assert positions_after([0, 5, 90, 91, 6, 7, 1], [0, 5, 20, 21, 22, 6, 7, 1], {90, 91}) == ([4, 5, 6], [5, 6, 7])
    assert positions_after([0, 90, 1], [0, 20, 1], {90}) == ([2], [2])  # only the end token after it
    assert positions_after([0, 90, 5, 90, 1], [0, 20, 5, 20, 1], {90}) is None  # twice: not compared
    assert positions_after([0, 5, 1], [0, 5, 1], {90}) is None  # not there
    assert positions_after([0, 90, 6, 1], [0, 20, 7, 1], {90}) is None  # the rest differs


@pytest.fixture
def context_config(tiny_sd1_path, image_folder, tmp_path):
    return TrainConfig(model=tiny_sd1_path, images=str(image_folder), token="<blob>", steps=3, lr=0.05, batch_size=2,
                       options={"init_token": "cat", "vectors": 1, "context_weight": 1.0},
                       output_dir=str(tmp_path / "run"))


def prepared(config, pipe):
    method = TextualInversion(config)
    method.prepare(pipe, None)
    return method


def test_the_penalty_is_zero_at_the_start_and_grows_as_the_token_leaves_its_word(context_config):
    pipe = load_pipeline(context_config.model)
    method = prepared(context_config, pipe)  # one vector, started from "cat": the prompts encode alike
    prompts = ["a photo of <blob> on a table", "<blob> in the snow"]
    assert method.regularisation(prompts).item() == pytest.approx(0.0, abs=1e-6)
    rows = method.rows["text_encoder"]
    with torch.no_grad():
        rows.add_(torch.randn(rows.shape, generator=torch.Generator().manual_seed(0)))
    penalty = method.regularisation(prompts)
    assert penalty.item() > 1e-3
    penalty.backward()
    assert rows.grad is not None and rows.grad.abs().sum() > 0  # it teaches the token's rows
    assert method.regularisation(["a photo of <blob>"]) is not None  # the end token still follows the token
    assert method.regularisation(["no token here"]) is None
    method.release()


def test_a_run_with_context_weight_trains_differently_and_touches_nothing_else(context_config, tmp_path):
    pipe = load_pipeline(context_config.model)
    frozen = {name: tensor.clone() for name, tensor in pipe.unet.state_dict().items()}
    with_context = train(context_config, pipe=pipe)
    plain = train(dataclasses.replace(context_config, options={"init_token": "cat", "vectors": 1},
                                      output_dir=str(tmp_path / "plain")))
    assert not torch.equal(load_file(with_context.embedding_path)["<blob>"], load_file(plain.embedding_path)["<blob>"])
    assert all(torch.equal(tensor, frozen[name]) for name, tensor in pipe.unet.state_dict().items())


@pytest.mark.parametrize("options, message", [
    ({"context_weight": -1.0}, "cannot be negative"),
    ({"context_weight": 0.5, "per_layer": True}, "leave it out with --per-layer"),
    ({"context_weight": 0.5, "time_stages": 2}, "leave it out with --per-layer"),
])
def test_context_weight_errors_name_the_option(context_config, options, message):
    config = dataclasses.replace(context_config, options={"init_token": "cat", **options})
    with pytest.raises(UserError, match=message):
        config.validate()
        train(config)


def test_sdxl_regularises_both_text_encoders_on_their_hidden_states(tiny_sdxl_path, image_folder, tmp_path):
    config = TrainConfig(model=tiny_sdxl_path, images=str(image_folder), token="<blob>", steps=1, lr=0.05,
                         batch_size=1, options={"init_token": "cat", "vectors": 1, "context_weight": 1.0},
                         output_dir=str(tmp_path / "run"))
    method = prepared(config, load_pipeline(tiny_sdxl_path))
    prompt = "a photo of <blob> on a table"
    assert method.regularisation([prompt]).item() == pytest.approx(0.0, abs=1e-6)
    for rows in method.rows.values():
        with torch.no_grad():
            rows.mul_(-2)
    method.regularisation([prompt]).backward()
    assert len(method.rows) == 2 and all(rows.grad.abs().sum() > 0 for rows in method.rows.values())
    # The second encoder (with projection) is compared on its hidden states, word by word after the token.
    tokenizer, (encoder, first_id, _) = method.tokenizers[1], method.encoders[1]
    with torch.no_grad():
        penalty = context_penalty(tokenizer, encoder, [prompt], "<blob>", "cat", {first_id})

        def hidden(text: str) -> torch.Tensor:
            ids = tokenizer(text, padding="max_length", max_length=77, return_tensors="pt").input_ids
            return encoder(ids).last_hidden_state[0]

        after = slice(5, 5 + len(tokenizer("on a table").input_ids) - 1)  # start, a, photo, of, token | on a table, end
        expected = 1 - torch.cosine_similarity(hidden(prompt)[after], hidden("a photo of cat on a table")[after]).mean()
    assert penalty.item() == pytest.approx(expected.item(), abs=1e-6) and penalty.item() > 0
    method.release()


def test_the_transformer_families_are_refused(tiny_flux_path, image_folder, tmp_path):
    config = TrainConfig(model=tiny_flux_path, images=str(image_folder), token="<blob>", steps=1,
                         options={"init_token": "cat", "context_weight": 1.0}, output_dir=str(tmp_path / "run"))
    with pytest.raises(UserError, match="for the UNet families"):
        train(config)


def test_pivotal_tuning_regularises_its_embeddings_only_while_they_learn(context_config):
    from textual_inversion.methods.pivotal import PivotalTuning

    config = dataclasses.replace(context_config, method="pivotal",
                                 options={"init_token": "cat", "context_weight": 1.0, "ti_fraction": 0.5})
    method = PivotalTuning(config)
    method.prepare(load_pipeline(config.model), None)
    method.embedding_steps = 1
    method.step_started(0)
    assert method.regularisation(["a photo of <blob> on a table"]) is not None
    method.step_started(1)
    assert method.regularisation(["a photo of <blob> on a table"]) is None
    method.release()
