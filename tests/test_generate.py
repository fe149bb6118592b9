"""Generation: PNGs with A1111-style parameters, a grid, determinism, and clear refusals."""

import numpy as np
import pytest
import torch
from PIL import Image

from textual_inversion import GenerateConfig, UserError, generate
from textual_inversion.formats import Embedding, write_embedding


@pytest.fixture
def concept_files(tmp_path):
    return [str(write_embedding(Embedding(f"<c{i}>", {"text_encoder": torch.randn(2, 768)}), tmp_path / f"c{i}.safetensors"))
            for i in range(2)]


def test_images_carry_their_parameters_and_a_grid_is_written(tiny_sd1_path, concept_files, tmp_path):
    config = GenerateConfig(model=tiny_sd1_path, concept=concept_files, prompt="a photo of <c0> next to <c1>",
                            negative_prompt="blurry", num_images=3, steps=2, seed=7, scheduler="euler",
                            output_dir=str(tmp_path / "out"))
    paths = generate(config)
    assert [p.name for p in paths] == ["000007.png", "000008.png", "000009.png"]
    parameters = Image.open(paths[1]).text["parameters"]
    assert parameters.splitlines()[0] == "a photo of <c0> next to <c1>"
    assert "Negative prompt: blurry" in parameters
    assert "Steps: 2, Sampler: EulerDiscreteScheduler, CFG scale: 7.5, Seed: 8, Size: 32x32" in parameters
    grid = Image.open(tmp_path / "out" / "grid.png")
    assert grid.size == (64, 64)


def test_same_seed_same_image(tiny_sd1_path, concept_files, tmp_path):
    def once(folder):
        config = GenerateConfig(model=tiny_sd1_path, concept=concept_files[:1], prompt="<c0>", num_images=1, steps=2,
                                seed=3, output_dir=str(tmp_path / folder))
        return np.asarray(Image.open(generate(config)[0]))

    assert np.array_equal(once("a"), once("b"))


def test_token_that_no_concept_defines_is_an_error(tiny_sd1_path, concept_files, tmp_path):
    config = GenerateConfig(model=tiny_sd1_path, concept=concept_files[:1], prompt="<c0> and <c9>", steps=1,
                            output_dir=str(tmp_path / "out"))
    with pytest.raises(UserError, match="<c9> but no loaded --concept defines it"):
        generate(config)
    assert not (tmp_path / "out").exists()


def test_unknown_scheduler_is_named(tiny_sd1_path, tmp_path):
    config = GenerateConfig(model=tiny_sd1_path, prompt="a cat", steps=1, scheduler="warp", output_dir=str(tmp_path))
    with pytest.raises(UserError, match="--scheduler warp: choose one of"):
        generate(config)


def test_each_run_gets_a_new_folder_and_a_used_one_is_refused(tiny_sd1_path, tmp_path, monkeypatch):
    """Without --output-dir: outputs/<date-time>, a new one each time; an --output-dir holding images needs --overwrite."""
    import re

    monkeypatch.chdir(tmp_path)
    config = GenerateConfig(model=tiny_sd1_path, prompt="a cat", num_images=1, steps=1, device="cpu")
    first, second = generate(config)[0].parent, generate(config)[0].parent
    assert first.parent == second.parent == tmp_path.joinpath("outputs").relative_to(tmp_path)
    assert first != second and re.fullmatch(r"\d{8}-\d{6}(-\d+)?", first.name), (first, second)
    assert sorted(p.name for p in first.iterdir()) == ["000000.png", "grid.png"]
    used = GenerateConfig(model=tiny_sd1_path, prompt="a cat", num_images=1, steps=1, seed=5, device="cpu",
                          output_dir=str(first))
    with pytest.raises(UserError, match=rf"^--output-dir {first}: holds images already; pass --overwrite"):
        generate(used)
    used.overwrite = True
    assert generate(used)[0] == first / "000005.png"
