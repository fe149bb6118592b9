"""Embedding files: every layout we write reads back, real files from the field load, pickles are safe."""

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from textual_inversion.errors import UserError
from textual_inversion.formats import Embedding, describe, read_embedding, write_embedding

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
LOCAL_FIXTURES = Path(__file__).parent / "data"


def sd1_embedding(vectors: int = 2) -> Embedding:
    return Embedding("<cat-toy>", {"text_encoder": torch.randn(vectors, 768)}, {"steps": "500", "base_model": "sd15"})


def sdxl_embedding() -> Embedding:
    return Embedding("<cat-toy>", {"clip_l": torch.randn(3, 768), "clip_g": torch.randn(3, 1280)})


@pytest.mark.parametrize("format,suffix", [("diffusers", ".safetensors"), ("diffusers", ".bin"),
                                           ("a1111", ".pt"), ("a1111", ".safetensors"), ("kohya", ".safetensors")])
def test_sd1_round_trip(tmp_path, format, suffix):
    embedding = sd1_embedding()
    path = write_embedding(embedding, tmp_path / f"cat-toy{suffix}", format)
    again = read_embedding(path)
    assert torch.equal(again.vectors["text_encoder"], embedding.vectors["text_encoder"])
    assert again.family == "sd1" and again.num_vectors == 2
    assert again.token in ("<cat-toy>", "cat-toy")  # A1111/kohya name the token after the file when not stored


def test_written_layouts_are_what_other_tools_expect(tmp_path):
    embedding = sd1_embedding()
    write_embedding(embedding, tmp_path / "a.pt", "a1111")
    a1111 = torch.load(tmp_path / "a.pt", weights_only=True)
    assert a1111["string_to_param"]["*"].shape == (2, 768) and a1111["name"] == "<cat-toy>"
    assert a1111["string_to_token"] == {"*": 265}
    write_embedding(embedding, tmp_path / "k.safetensors", "kohya")
    assert set(load_file(tmp_path / "k.safetensors")) == {"emb_params"}
    write_embedding(embedding, tmp_path / "d.safetensors", "diffusers")
    assert set(load_file(tmp_path / "d.safetensors")) == {"<cat-toy>"}
    write_embedding(sdxl_embedding(), tmp_path / "x.safetensors", "kohya")
    assert {k: v.shape[-1] for k, v in load_file(tmp_path / "x.safetensors").items()} == {"clip_l": 768, "clip_g": 1280}


def test_sdxl_round_trip_and_family(tmp_path):
    path = write_embedding(sdxl_embedding(), tmp_path / "xl.safetensors")
    again = read_embedding(path)
    assert again.family == "sdxl" and again.token == "<cat-toy>" and again.num_vectors == 3
    with pytest.raises(UserError, match="SDXL embeddings as .safetensors"):
        write_embedding(again, tmp_path / "xl.pt", "a1111")


def test_real_concept_library_file_loads():
    """birb-style from the HF concept library: a pickled {token: 1-D tensor}."""
    path = FIXTURES / "real-embeddings" / "birb-style_learned_embeds.bin"
    if not path.exists():
        path = LOCAL_FIXTURES / "birb-style_learned_embeds.bin"
    embedding = read_embedding(path)
    assert embedding.token == "<birb-style>"
    assert embedding.vectors["text_encoder"].shape == (1, 768)
    assert embedding.family == "sd1"


class RunsCode:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/textual-inversion-pwned",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = Path("/tmp/textual-inversion-pwned")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"<x>": RunsCode()}, handle)
    with pytest.raises(UserError, match="refused.*could run code"):
        read_embedding(path)
    assert not marker.exists()


def test_files_that_are_not_embeddings(tmp_path):
    (tmp_path / "notes.safetensors").write_text("hello")
    with pytest.raises(UserError, match="not a readable .safetensors"):
        read_embedding(tmp_path / "notes.safetensors")
    save_file({"a": torch.zeros(2, 4), "b": torch.zeros(2, 4)}, str(tmp_path / "two.safetensors"))
    with pytest.raises(UserError, match="not an embedding file"):
        read_embedding(tmp_path / "two.safetensors")
    torch.save({"<x>": torch.zeros(2, 3, 4)}, tmp_path / "cube.bin")
    with pytest.raises(UserError, match=r"shape \[n, dim\]"):
        read_embedding(tmp_path / "cube.bin")
    with pytest.raises(UserError, match="no such embedding file"):
        read_embedding(tmp_path / "missing.safetensors")


def test_describe_names_token_family_and_metadata():
    text = describe(sd1_embedding())
    assert "<cat-toy>" in text and "Stable Diffusion 1.x" in text and "steps:" in text and "500" in text


def test_describe_names_the_format_and_what_an_a1111_file_carries(tmp_path):
    """An AUTOMATIC1111 .pt as A1111 writes it: its vectors under '*' and the run's name, step and checkpoint."""
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.randn(2, 768)}, "name": "cat-toy",
                "step": 3000, "sd_checkpoint": "e1441589", "sd_checkpoint_name": "v1-5-pruned-emaonly"},
               tmp_path / "cat-toy.pt")
    embedding = read_embedding(tmp_path / "cat-toy.pt")
    lines = describe(embedding).splitlines()
    assert "format:   a1111 .pt" in lines and "step:     3000" in lines and "sd_checkpoint: e1441589" in lines
    assert "sd_checkpoint_name: v1-5-pruned-emaonly" in lines and not any(line.startswith("name:") for line in lines)
    again = torch.load(write_embedding(embedding, tmp_path / "again.pt", "a1111"), weights_only=True)
    assert (again["step"], again["sd_checkpoint"], again["sd_checkpoint_name"]) == \
        (3000, "e1441589", "v1-5-pruned-emaonly")  # converting keeps them


@pytest.mark.parametrize("format,suffix,shown", [("diffusers", ".safetensors", "diffusers .safetensors"),
                                                 ("diffusers", ".bin", "concept-library .bin"),
                                                 ("a1111", ".safetensors", "a1111 .safetensors"),
                                                 ("kohya", ".safetensors", "kohya .safetensors")])
def test_describe_names_the_format_of_each_layout(tmp_path, format, suffix, shown):
    path = write_embedding(sd1_embedding(), tmp_path / f"cat-toy{suffix}", format)
    assert f"format:   {shown}" in describe(read_embedding(path)).splitlines()
    assert "format:   concept-library .bin" in describe(read_embedding(LOCAL_FIXTURES / "birb-style_learned_embeds.bin"))
