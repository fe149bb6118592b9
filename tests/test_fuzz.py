"""Fuzzing the loaders: random bytes, dicts and tensors get a result or our clear error, nothing else.

Run longer with `FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz.py` (docs/reliability.md).
"""

import os
import pickle
import string
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from textual_inversion.config import TrainConfig
from textual_inversion.data import read_caption
from textual_inversion.errors import UserError
from textual_inversion.formats import Embedding, read_embedding
from textual_inversion.options import read_toml

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

names = st.text(alphabet=string.ascii_letters + string.digits + "<>_-.*", min_size=1, max_size=12)
shapes = st.lists(st.integers(min_value=0, max_value=5), min_size=0, max_size=3)
dtypes = st.sampled_from([torch.float32, torch.float16, torch.int64, torch.uint8, torch.bool])
tensors = st.builds(lambda shape, dtype: torch.zeros(shape, dtype=dtype), shapes, dtypes)
leaves = st.one_of(tensors, st.integers(), st.text(max_size=8), st.none(), st.floats(allow_nan=True))
payloads = st.recursive(leaves, lambda inner: st.dictionaries(names, inner, max_size=4) | st.lists(inner, max_size=3),
                        max_leaves=8)


def read_or_clear_error(path: Path) -> None:
    try:
        embedding = read_embedding(path)
    except UserError as error:
        assert str(error) and "\n" not in str(error)
        return
    assert isinstance(embedding, Embedding) and embedding.vectors
    for vectors in embedding.vectors.values():
        assert vectors.dim() == 2 and vectors.dtype == torch.float32 and torch.isfinite(vectors).all()


@FUZZ
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".safetensors", ".pt", ".bin"]))
def test_random_bytes(tmp_path, data, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(data)
    read_or_clear_error(path)


@FUZZ
@given(payload=payloads, suffix=st.sampled_from([".pt", ".bin"]))
def test_random_pickled_structures(tmp_path, payload, suffix):
    path = tmp_path / f"x{suffix}"
    with open(path, "wb") as handle:
        pickle.dump(payload, handle)
    read_or_clear_error(path)


@FUZZ
@given(entries=st.dictionaries(names, tensors, max_size=4))
def test_random_safetensors(tmp_path, entries):
    path = tmp_path / "x.safetensors"
    save_file({k: v.contiguous() for k, v in entries.items()}, str(path))
    read_or_clear_error(path)


@FUZZ
@given(text=st.text(max_size=200))
def test_random_toml(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    try:
        values = read_toml(path, TrainConfig.option_names())
        TrainConfig.from_values(values, "--config").validate()
    except UserError as error:
        assert "\n" not in str(error)


@FUZZ
@given(values=st.dictionaries(st.sampled_from(["steps", "lr", "flip", "vectors", "token", "images", "seed",
                                                 "resolution", "crop", "mixed_precision", "init_token"]),
                              st.one_of(st.integers(), st.floats(), st.text(max_size=6), st.booleans(), st.none())))
def test_random_option_values(values):
    try:
        TrainConfig.from_values(values, "options").validate()
    except UserError as error:
        assert "\n" not in str(error)


@FUZZ
@given(text=st.text(max_size=120))
def test_random_captions(tmp_path, text):
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    try:
        caption = read_caption(tmp_path / "a.png", "<t>")
    except UserError:
        return
    assert "<t>" in caption


@pytest.fixture(scope="module")
def lora_pipe(tiny_sd1_path):
    from textual_inversion.models import load_pipeline

    return load_pipeline(tiny_sd1_path)


@settings(max_examples=max(10, EXAMPLES // 4), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.dictionaries(st.sampled_from(["unet.down_blocks.1.attentions.0.proj_in.lora.down.weight",
                                                 "unet.lora_A.weight", "lora_unet_x.lora_down.weight", "lora.alpha",
                                                 "text_encoder.lora_B.weight", "lora_te_x.alpha"]),
                               tensors, min_size=1, max_size=4))
def test_random_lora_files(tmp_path, lora_pipe, entries):
    from textual_inversion.concepts import load_concepts

    path = tmp_path / "x.safetensors"
    save_file({k: v.contiguous() for k, v in entries.items()}, str(path))
    try:
        load_concepts(lora_pipe, [str(path)])
    except UserError as error:
        assert "\n" not in str(error)
    finally:
        if lora_pipe.get_list_adapters():
            lora_pipe.delete_adapters(list({a for names in lora_pipe.get_list_adapters().values() for a in names}))
