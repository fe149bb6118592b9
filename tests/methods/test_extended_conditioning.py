"""--per-layer (P+) and --time-stages: the token's own vectors for each cross-attention layer of the UNet, and for
each denoising stage."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from textual_inversion import GenerateConfig, TrainConfig, UserError, generate, train
from textual_inversion.concepts import load_concepts, resolve_concept
from textual_inversion.extended_conditioning import SetRows, SetTextEncoder, cross_attention_layers
from textual_inversion.models import load_pipeline


@pytest.fixture
def per_layer_config(tiny_sd1_path, image_folder, tmp_path):
    return TrainConfig(model=tiny_sd1_path, images=str(image_folder), token="<blob>", steps=4, lr=0.05, batch_size=2,
                       checkpoint_every=2, options={"init_token": "cat", "vectors": 2, "per_layer": True},
                       output_dir=str(tmp_path / "run"))


def test_each_layer_learns_its_own_vectors_and_nothing_else_changes(per_layer_config):
    pipe = load_pipeline(per_layer_config.model)
    frozen = {name: tensor.clone() for name, tensor in {**pipe.unet.state_dict(),
                                                         **pipe.text_encoder.state_dict()}.items()}
    result = train(per_layer_config, pipe=pipe)
    layers = cross_attention_layers(pipe.unet)
    per_layer = load_file(result.outputs["embedding-extended"])
    assert sorted(per_layer) == sorted(layers) and all(v.shape == (2, 768) for v in per_layer.values())
    stacked = torch.stack([per_layer[name] for name in layers])
    assert not torch.allclose(stacked[0], stacked[-1])  # the layers went their own ways
    assert torch.allclose(load_file(result.embedding_path)["<blob>"], stacked.mean(0))  # the standard file: the mean
    base = pipe.text_encoder.encoder  # the wrapped CLIP model
    for name, tensor in {**pipe.unet.state_dict(), **base.state_dict()}.items():
        if name in frozen:
            assert torch.equal(tensor, frozen[name]), name


def test_each_cross_attention_layer_reads_the_text_encoded_with_its_own_vectors(per_layer_config):
    pipe = load_pipeline(per_layer_config.model)
    result = train(per_layer_config, pipe=pipe)
    assert isinstance(pipe.text_encoder, SetTextEncoder)
    layered = pipe.encode_prompt("a photo of <blob>", "cpu", 1, False)[0]
    layers = cross_attention_layers(pipe.unet)
    assert layered.shape[1] == 77 * len(layers)
    per_layer = load_file(result.outputs["embedding-extended"])
    for index in (0, len(layers) - 1):  # an ordinary token with that layer's vectors encodes to that slice
        plain = load_pipeline(per_layer_config.model)
        plain.load_textual_inversion(per_layer[layers[index]], token="<blob>")
        expected = plain.encode_prompt("a photo of <blob>", "cpu", 1, False)[0]
        assert torch.allclose(layered[:, 77 * index:77 * (index + 1)], expected, atol=1e-6)


def test_a_per_layer_run_generates_loads_back_and_resumes(per_layer_config, tmp_path):
    result = train(per_layer_config)
    config = GenerateConfig(model=per_layer_config.model, concept=[str(result.output_dir)], prompt="a photo of <blob>",
                            num_images=1, steps=2, width=32, height=32, seed=3, output_dir=str(tmp_path / "a"))
    def picture(**changes) -> np.ndarray:
        return np.asarray(Image.open(generate(dataclasses.replace(config, **changes))[0]))

    image, again = picture(), picture(output_dir=str(tmp_path / "b"))
    mean_only = picture(concept=[str(result.embedding_path)], output_dir=str(tmp_path / "c"))
    assert np.array_equal(image, again) and not np.array_equal(image, mean_only)
    assert resolve_concept(str(result.output_dir)).num_vectors == 2  # inspect/convert read the standard file
    resumed = train(dataclasses.replace(per_layer_config, steps=2, output_dir=str(tmp_path / "resumed")))
    resumed = train(dataclasses.replace(per_layer_config, output_dir=str(tmp_path / "resumed"), resume=True))
    first, second = (load_file(r.outputs["embedding-extended"]) for r in (result, resumed))
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_per_layer_is_refused_where_it_cannot_work(per_layer_config, tiny_sdxl_path, tmp_path):
    with pytest.raises(UserError, match="--per-layer: for SD 1.x, 2.x and miniworld"):
        train(dataclasses.replace(per_layer_config, model=tiny_sdxl_path, output_dir=str(tmp_path / "xl")))
    result = train(per_layer_config)
    pipe = load_pipeline(per_layer_config.model)
    load_concepts(pipe, [str(result.output_dir)])
    with pytest.raises(UserError, match="already in the vocabulary"):
        load_concepts(pipe, [str(result.output_dir)])


def test_each_denoising_stage_uses_its_own_vectors(tiny_sd1_path):
    """A UNet call at a noisy timestep reads stage 0's encoding, at a clean one the last stage's, sample by sample:
    the same outputs as an ordinary token holding that stage's vectors."""
    from textual_inversion.extended_conditioning import SetLayout, install
    from textual_inversion.tokens import add_placeholder_tokens

    torch.manual_seed(0)
    early, late = torch.randn(1, 768) * 0.5, torch.randn(1, 768) * 0.5
    staged = load_pipeline(tiny_sd1_path)
    install(staged, add_placeholder_tokens(staged.tokenizer, "<blob>", 1)[0], torch.stack([early, late]),
            SetLayout([], 2))
    latents = torch.randn(2, 4, 16, 16)
    timesteps = torch.tensor([900, 100])  # the first sample early (noisy), the second late
    conditioning = staged.encode_prompt(["a photo of <blob>"] * 2, "cpu", 1, False)[0]
    with torch.no_grad():
        both = staged.unet(latents, timesteps, conditioning).sample
    for row, vectors in ((0, early), (1, late)):
        plain = load_pipeline(tiny_sd1_path)
        plain.load_textual_inversion(vectors, token="<blob>")
        expected_conditioning = plain.encode_prompt(["a photo of <blob>"] * 2, "cpu", 1, False)[0]
        with torch.no_grad():
            expected = plain.unet(latents, timesteps, expected_conditioning).sample
        assert torch.allclose(both[row], expected[row], atol=1e-5)


@pytest.mark.parametrize(("per_layer", "shared"), [(False, False), (True, False), (False, True)])
def test_a_staged_run_writes_every_set_generates_and_resumes(per_layer, shared, per_layer_config, tmp_path):
    config = dataclasses.replace(per_layer_config, options=dataclasses.replace(
        per_layer_config.options, per_layer=per_layer, time_stages=2, shared_vectors=shared))
    pipe = load_pipeline(config.model)
    result = train(config, pipe=pipe)
    sets = load_file(result.outputs["embedding-extended"])
    layers = cross_attention_layers(pipe.unet)
    expected = [f"{layer}.stage.{s}" for layer in layers for s in (0, 1)] if per_layer else ["stage.0", "stage.1"]
    assert sorted(sets) == sorted(expected)
    assert not torch.allclose(sets[expected[0]], sets[expected[1]])  # the stages learned apart
    generated = GenerateConfig(model=config.model, concept=[str(result.output_dir)], prompt="a photo of <blob>",
                               num_images=1, steps=2, width=32, height=32, seed=3, output_dir=str(tmp_path / "a"))
    assert Image.open(generate(generated)[0]).size == (32, 32)
    train(dataclasses.replace(config, steps=2, output_dir=str(tmp_path / "resumed")))
    resumed = train(dataclasses.replace(config, output_dir=str(tmp_path / "resumed"), resume=True))
    again = load_file(resumed.outputs["embedding-extended"])
    assert all(torch.equal(sets[key], again[key]) for key in sets)


def test_shared_vectors_learn_from_every_set_and_each_offset_from_its_own():
    start = torch.randn(2, 3, 8)  # [S, n, D]
    rows = SetRows(torch.nn.Embedding(10, 8), 10, start, shared=True)
    assert torch.allclose(rows.sets(), start, atol=1e-6)  # the sets start where they were asked to
    rows.active = 0
    rows(torch.tensor([[1, 10, 11, 12]])).sum().backward()
    assert rows.shared.grad.abs().sum() > 0 and rows.rows.grad[0].abs().sum() > 0
    assert rows.rows.grad[1].abs().sum() == 0  # set 1 was not looked up: only the shared part moves it
    plain = SetRows(torch.nn.Embedding(10, 8), 10, start)
    assert plain.shared is None and torch.equal(plain.sets(), start)


@pytest.mark.parametrize(("options", "message"), [
    ({"shared_vectors": True, "per_layer": False}, "add --time-stages N"),
    ({"shared_vectors": True, "time_stages": 2, "keep_norm": True}, "leave out --keep-norm or --shared-vectors"),
])
def test_shared_vectors_are_refused_where_they_mean_nothing(options, message, per_layer_config):
    config = dataclasses.replace(per_layer_config, options=dataclasses.replace(per_layer_config.options, **options))
    with pytest.raises(UserError, match=message):
        train(config)


def test_a_checkpoint_of_other_vector_options_is_refused_on_resume(per_layer_config, tmp_path):
    config = dataclasses.replace(per_layer_config, steps=2, options=dataclasses.replace(
        per_layer_config.options, per_layer=False, time_stages=2))
    train(config)
    shared = dataclasses.replace(config, steps=4, resume=True, options=dataclasses.replace(config.options,
                                                                                           shared_vectors=True))
    with pytest.raises(UserError, match="--shared-vectors"):
        train(shared)
