"""Loading base models from every place users keep them, and naming their family."""

import json
import shutil

import pytest

from textual_inversion.errors import UserError
from textual_inversion.models import load_pipeline, model_family


def test_family_of_tiny_models(tiny_sd1_path, tiny_sdxl_path, tmp_path):
    from textual_inversion.tiny import build_tiny_pipeline

    assert model_family(load_pipeline(tiny_sd1_path)) == "sd1"
    assert model_family(load_pipeline(tiny_sdxl_path)) == "sdxl"
    assert model_family(build_tiny_pipeline("sd2", tmp_path / "sd2")) == "sd2"


def test_unknown_hub_id_offline_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="offline.*--model /path/to/folder"):
        load_pipeline("someone/some-model")


def test_broken_or_foreign_folders(tiny_sd1_path, tmp_path):
    with pytest.raises(UserError, match="no model_index.json"):
        load_pipeline(str(tmp_path))
    with pytest.raises(UserError, match="no such file or folder"):
        load_pipeline(str(tmp_path / "missing" / "model.safetensors"))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd1_path, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(UserError, match="broken or incomplete"):
        load_pipeline(str(broken))
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(UserError, match="a FluxPipeline; this tool supports"):
        load_pipeline(str(other))


def test_single_file_checkpoint_loads_with_the_same_weights(tiny_sd1_path, tmp_path, monkeypatch):
    import torch

    from tests.single_file import write_sd1_single_file

    original = load_pipeline(tiny_sd1_path)
    path = tmp_path / "model.safetensors"
    write_sd1_single_file(original, path)
    loaded = load_pipeline(str(path), model_config=tiny_sd1_path)
    assert model_family(loaded) == "sd1"
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(original, name).state_dict(), getattr(loaded, name).state_dict()
        assert all(torch.equal(ours[k], theirs[k].reshape(ours[k].shape)) for k in ours), name

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="pass --model-config"):
        load_pipeline(str(path))
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="cannot read this checkpoint"):
        load_pipeline(str(truncated))
