"""The packaged model loads with plain diffusers, offline, and generates 64x64 images."""

import json
import os
from pathlib import Path

import pytest

from textual_inversion.miniworld import MODEL_DIR, model_path


def test_model_path_points_at_weights():
    p = Path(model_path())
    assert (p / "model_index.json").is_file()
    index = json.loads((p / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
    for sub in ("vae", "text_encoder", "tokenizer", "unet", "scheduler"):
        assert (p / sub).is_dir(), sub


def test_weights_are_small_fp16_safetensors():
    from safetensors import safe_open

    files = list(MODEL_DIR.rglob("*.safetensors"))
    assert len(files) == 3
    assert not list(MODEL_DIR.rglob("*.bin"))
    assert sum(f.stat().st_size for f in MODEL_DIR.rglob("*") if f.is_file()) <= 25 * 2**20
    for f in files:
        with safe_open(str(f), "pt") as st:
            assert all(str(st.get_slice(k).get_dtype()) == "F16" for k in st.keys()), f


def test_missing_weights_error(monkeypatch, tmp_path):
    import textual_inversion.miniworld as mw

    monkeypatch.setattr(mw, "MODEL_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="miniworld.build"):
        mw.model_path()


def test_plain_diffusers_generates_offline(monkeypatch):
    import torch
    from diffusers import StableDiffusionPipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    pipe = StableDiffusionPipeline.from_pretrained(model_path())
    assert pipe.unet.dtype == pipe.text_encoder.dtype == torch.float32
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        ["a big red heart on a navy background", ""],
        num_inference_steps=3,
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert [im.size for im in out.images] == [(64, 64), (64, 64)]
    assert os.environ["HF_HUB_OFFLINE"] == "1"
