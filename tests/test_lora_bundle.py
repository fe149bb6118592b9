"""Bundle LoRA files (LoRA + embedding in one .safetensors): pivotal tuning writes one, generate loads both parts,
and files laid out as AUTOMATIC1111 and OneTrainer write them are read."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.conftest import draw_subject
from textual_inversion import GenerateConfig, TrainConfig, UserError, generate, train
from textual_inversion.concepts import read_concept
from textual_inversion.formats import Embedding, read_embedding
from textual_inversion.lora_bundle import read_bundle, write_bundle
from textual_inversion.methods.lora import kohya_state_dict
from textual_inversion.outputs import BUNDLE, EMBEDDING, LORA, OUTPUT_FILES


@pytest.fixture(scope="module")
def pivotal_run(tiny_sd1_path, tmp_path_factory):
    """A 2-step pivotal-tuning run on the tiny SD1 model with --bundle."""
    folder = tmp_path_factory.mktemp("bundle")
    (folder / "images").mkdir()
    for index in range(4):
        draw_subject(folder / "images" / f"{index}.png", index)
    config = TrainConfig.from_values({"model": tiny_sd1_path, "images": str(folder / "images"), "token": "<blob>",
                                      "method": "pivotal", "init_token": "cat", "bundle": True, "steps": 2,
                                      "lr": 0.05, "lora_lr": 0.01, "batch_size": 2,
                                      "output_dir": str(folder / "run")})
    return train(config)


def test_pivotal_run_writes_a_bundle_of_its_two_files(pivotal_run):
    run = pivotal_run.output_dir
    bundle = run / OUTPUT_FILES[BUNDLE]
    assert pivotal_run.outputs[BUNDLE] == bundle
    assert json.loads((run / "run.json").read_text())["outputs"][BUNDLE] == OUTPUT_FILES[BUNDLE]
    embeddings, lora_state = read_bundle(bundle)
    learned = read_embedding(run / OUTPUT_FILES[EMBEDDING])
    assert [embedding.token for embedding in embeddings] == ["<blob>"]
    assert torch.equal(embeddings[0].vectors["text_encoder"], learned.vectors["text_encoder"])
    kohya = kohya_state_dict(run / OUTPUT_FILES[LORA], alpha=4)  # the run's rank and alpha: the defaults, 4
    assert set(lora_state) == set(kohya) and all(torch.equal(lora_state[key], kohya[key]) for key in kohya)
    with safe_open(str(bundle), framework="pt") as handle:  # the names A1111 reads
        assert "bundle_emb.<blob>.string_to_param.*" in handle.keys()
        assert handle.metadata()["method"] == "pivotal"


def test_generate_with_the_bundle_matches_the_run_folder(pivotal_run, tiny_sd1_path, tmp_path):
    """Same vectors and the same LoRA weights (kohya's layout, converted back by diffusers): the same pixels."""
    run = pivotal_run.output_dir
    parts = read_concept(str(run / OUTPUT_FILES[BUNDLE])).parts
    assert [kind for kind, _ in parts] == [EMBEDDING, LORA] and not any("bundle_emb" in key for key in parts[1][1])

    def image_from(concept, folder):
        config = GenerateConfig(model=tiny_sd1_path, concept=[str(concept)], prompt="a <blob> on grass",
                                num_images=1, steps=2, seed=11, output_dir=str(tmp_path / folder))
        return np.asarray(Image.open(generate(config)[0]))

    from_bundle = image_from(run / OUTPUT_FILES[BUNDLE], "bundle")
    from_folder = image_from(run, "folder")
    assert np.array_equal(from_bundle, from_folder)
    assert not np.array_equal(from_bundle, image_from(run / OUTPUT_FILES[EMBEDDING], "embedding-only"))  # LoRA counts


def fake_kohya_lora(prefix: str) -> dict:
    """A few tensors named as kohya names an SD LoRA's layers (enough to tell them from the bundle's keys)."""
    generator = torch.Generator().manual_seed(0)
    return {f"{prefix}.lora_down.weight": torch.randn(4, 32, generator=generator),
            f"{prefix}.lora_up.weight": torch.randn(32, 4, generator=generator),
            f"{prefix}.alpha": torch.tensor(4.0)}


@pytest.mark.parametrize("writer", ["a1111 sd1", "onetrainer sd1", "onetrainer sdxl"])
def test_reads_bundles_laid_out_as_a1111_and_onetrainer_write_them(writer, tmp_path):
    generator = torch.Generator().manual_seed(1)
    lora = fake_kohya_lora("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q")
    clip_l, clip_g = torch.randn(2, 768, generator=generator), torch.randn(2, 1280, generator=generator)
    if writer == "a1111 sd1":
        bundled = {"bundle_emb.mycat.string_to_param.*": clip_l}
    elif writer == "onetrainer sd1":
        bundled = {"bundle_emb.mycat.clip_l": clip_l}
    else:  # OneTrainer also writes output-side vectors, which have no use here
        bundled = {"bundle_emb.mycat.clip_l": clip_l, "bundle_emb.mycat.clip_g": clip_g,
                   "bundle_emb.mycat.clip_l_out": torch.randn(2, 768, generator=generator)}
    save_file({**lora, **bundled}, str(tmp_path / "mycat.safetensors"))
    embeddings, lora_state = read_bundle(tmp_path / "mycat.safetensors")
    assert [embedding.token for embedding in embeddings] == ["mycat"]
    if writer == "onetrainer sdxl":
        assert embeddings[0].family == "sdxl" and torch.equal(embeddings[0].vectors["clip_g"], clip_g)
        assert torch.equal(embeddings[0].vectors["clip_l"], clip_l)
    else:
        assert embeddings[0].family == "sd1" and torch.equal(embeddings[0].vectors["text_encoder"], clip_l)
    assert set(lora_state) == set(lora)
    assert [kind for kind, _ in read_concept(str(tmp_path / "mycat.safetensors")).parts] == [EMBEDDING, LORA]


def test_write_bundle_names_keys_as_its_readers_expect(tmp_path):
    generator = torch.Generator().manual_seed(2)
    sd1 = Embedding("<a>", {"text_encoder": torch.randn(1, 768, generator=generator)})
    sdxl = Embedding("<b>", {"clip_l": torch.randn(3, 768, generator=generator),
                             "clip_g": torch.randn(3, 1280, generator=generator)})
    lora = fake_kohya_lora("lora_te1_text_model_encoder_layers_0_self_attn_q_proj")
    path = write_bundle(lora, [sd1, sdxl], tmp_path / "both.safetensors", {"base_model": "x"})
    assert set(load_file(path)) == set(lora) | {"bundle_emb.<a>.string_to_param.*", "bundle_emb.<b>.clip_l",
                                                "bundle_emb.<b>.clip_g"}
    embeddings, _ = read_bundle(path)
    assert [(e.token, e.family, e.metadata["base_model"]) for e in embeddings] == [("<a>", "sd1", "x"), ("<b>", "sdxl", "x")]
    with pytest.raises(UserError, match="a bundle LoRA cannot hold a token with a '.'"):
        write_bundle(lora, [Embedding("v1.5", sd1.vectors)], tmp_path / "dot.safetensors")
    assert not (tmp_path / "dot.safetensors").exists()
