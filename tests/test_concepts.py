"""Loading learned concepts: diffusers' own loader is the judge of our files and our loader."""

import re
import shutil

import pytest
import torch

from textual_inversion import TrainConfig, UserError, load_concepts, train
from textual_inversion.concepts import resolve_concept, undefined_tokens
from textual_inversion.formats import Embedding, write_embedding
from textual_inversion.models import load_pipeline


def prompt_embeddings(pipe, prompt: str) -> torch.Tensor:
    with torch.no_grad():
        return pipe.encode_prompt(prompt, "cpu", 1, False)[0]


def sdxl_prompt_embeddings(pipe, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(prompt, device="cpu", num_images_per_prompt=1,
                                                  do_classifier_free_guidance=False)
    return embeds, pooled


@pytest.fixture(scope="module")
def trained_sd1(tiny_sd1_path, tmp_path_factory):
    """A 2-vector concept trained on the tiny SD1 model, with the prompt embedding the trained pipeline gives."""
    from tests.conftest import draw_subject

    folder = tmp_path_factory.mktemp("images")
    for index in range(3):
        draw_subject(folder / f"{index}.png", index)
    pipe = load_pipeline(tiny_sd1_path)
    config = TrainConfig(model=tiny_sd1_path, images=str(folder), token="<blob>",
                         options={"init_token": "cat", "vectors": 2}, steps=4, lr=0.05, output_dir=str(tmp_path_factory.mktemp("run") / "out"))
    result = train(config, pipe=pipe)
    return result, prompt_embeddings(pipe, "a photo of <blob> on the beach")


def test_diffusers_loads_our_file_and_agrees_with_our_loader(trained_sd1, tiny_sd1_path):
    result, seen_in_training = trained_sd1
    by_diffusers = load_pipeline(tiny_sd1_path)
    by_diffusers.load_textual_inversion(str(result.embedding_path))
    ours = load_pipeline(tiny_sd1_path)
    assert load_concepts(ours, [result.output_dir]) == ["<blob>"]
    prompt = "a photo of <blob> on the beach"
    assert torch.equal(prompt_embeddings(by_diffusers, prompt), prompt_embeddings(ours, prompt))
    assert torch.equal(prompt_embeddings(ours, prompt), seen_in_training)


def test_sdxl_file_loads_into_both_encoders_as_diffusers_documents(tiny_sdxl_path, tmp_path):
    embedding = Embedding("<xl>", {"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)})
    path = write_embedding(embedding, tmp_path / "xl.safetensors")
    from safetensors.torch import load_file

    state = load_file(path)
    by_diffusers = load_pipeline(tiny_sdxl_path)
    by_diffusers.load_textual_inversion(state["clip_l"], token="<xl>", text_encoder=by_diffusers.text_encoder,
                                        tokenizer=by_diffusers.tokenizer)
    by_diffusers.load_textual_inversion(state["clip_g"], token="<xl>", text_encoder=by_diffusers.text_encoder_2,
                                        tokenizer=by_diffusers.tokenizer_2)
    ours = load_pipeline(tiny_sdxl_path)
    load_concepts(ours, [path])
    for theirs, mine in zip(sdxl_prompt_embeddings(by_diffusers, "a <xl> toy"), sdxl_prompt_embeddings(ours, "a <xl> toy"),
                            strict=True):
        assert torch.equal(theirs, mine)


def test_embedding_for_another_family_is_refused_naming_both_widths(tiny_sdxl_path, tiny_sd1_path, tmp_path):
    sd1_file = write_embedding(Embedding("<a>", {"text_encoder": torch.randn(1, 768)}), tmp_path / "a.safetensors")
    with pytest.raises(UserError, match=r"text_encoder 768.*Stable Diffusion 1.x.*sdxl.*clip_l 768, clip_g 1280"):
        load_concepts(load_pipeline(tiny_sdxl_path), [sd1_file])
    sd2_file = write_embedding(Embedding("<b>", {"text_encoder": torch.randn(1, 1024)}), tmp_path / "b.safetensors")
    with pytest.raises(UserError, match=r"text_encoder 1024.*needs text_encoder 768"):
        load_concepts(load_pipeline(tiny_sd1_path), [sd2_file])


def test_several_concepts_and_undefined_tokens(tiny_sd1_path, tmp_path):
    files = [write_embedding(Embedding(f"<c{i}>", {"text_encoder": torch.randn(i + 1, 768)}), tmp_path / f"c{i}.safetensors")
             for i in range(2)]
    pipe = load_pipeline(tiny_sd1_path)
    assert load_concepts(pipe, files) == ["<c0>", "<c1>"]
    assert undefined_tokens("<c0> next to <c1> and <c2>", pipe.tokenizer) == ["<c2>"]
    assert undefined_tokens("a photo <|endoftext|>", pipe.tokenizer) == []
    with pytest.raises(UserError, match="already in the vocabulary"):
        load_concepts(pipe, [files[0]])


def offline_hub_snapshot(tmp_path, monkeypatch, repo_id: str):
    """An empty snapshot folder of `repo_id` in a Hugging Face cache under tmp_path, which huggingface_hub then
    reads (as `hf_hub_download` lays one out: refs/main names the snapshot's commit)."""
    cache = tmp_path / "hub"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    return snapshot


def test_concept_library_repo_resolves_through_the_hf_cache(tmp_path, monkeypatch):
    """`sd-concepts-library/<name>`: learned_embeds.bin + token_identifier.txt, laid into an offline cache."""
    from pathlib import Path

    snapshot = offline_hub_snapshot(tmp_path, monkeypatch, "sd-concepts-library/birb-style")
    shutil.copy(Path(__file__).parent / "data" / "birb-style_learned_embeds.bin", snapshot / "learned_embeds.bin")
    (snapshot / "token_identifier.txt").write_text("<birb-style>")
    embedding = resolve_concept("sd-concepts-library/birb-style")
    assert embedding.token == "<birb-style>" and embedding.family == "sd1"
    with pytest.raises(UserError, match="offline"):
        resolve_concept("sd-concepts-library/not-cached")


def test_a_missing_path_is_named_at_once_without_asking_the_hub(tmp_path, monkeypatch):
    """`runs/teal-thing` (runs/ exists here), `./x`, `a/b/c`, `x.pt`: no hub retries, the path is blamed."""
    import time

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_hub)
    monkeypatch.setattr("textual_inversion.models.probe_hub", no_hub)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "teal").mkdir(parents=True)
    started = time.monotonic()
    with pytest.raises(UserError, match=r"^--concept runs/teal-thing: no such folder here, and not in the Hugging "
                                        r"Face cache; check the path \(runs/ holds teal\)"):
        resolve_concept("runs/teal-thing")
    for spec in ("./runs/teal-thing", "runs/teal/thing", "teal.pt", "other/teal.safetensors", "teal-thing"):
        with pytest.raises(UserError, match=rf"^--concept {re.escape(spec)}: no such file or folder$"):
            resolve_concept(spec)
    assert time.monotonic() - started < 0.5


def test_an_unreachable_hub_means_the_cache_alone(tmp_path, monkeypatch):
    """Without HF_HUB_OFFLINE, a hub that does not answer the probe is not retried: local_files_only at once."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    asked = []

    def cache_only_download(repo_id, filename, local_files_only=False, **kwargs):
        asked.append(local_files_only)
        raise LocalEntryNotFoundError("not cached")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", cache_only_download)
    monkeypatch.setattr("textual_inversion.models.probe_hub", lambda: "no connection to huggingface.co:443: test")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(UserError, match=r"^--concept someone/some-concept: no such folder here, and as a hub repo not in "
                                        r"the Hugging Face cache, and the hub cannot be reached \(no connection to "
                                        r"huggingface.co:443: test\); check the path, or download"):
        resolve_concept("someone/some-concept")
    assert asked == [True, True]  # learned_embeds.safetensors, then .bin: each from the cache alone


def test_a_hub_repo_with_learned_embeds_safetensors_resolves(tmp_path, monkeypatch):
    """Repos written by `export` (and every Flux, SD3 or Z-Image concept) hold learned_embeds.safetensors only."""
    import torch

    from textual_inversion.formats import Embedding, write_embedding

    snapshot = offline_hub_snapshot(tmp_path, monkeypatch, "someone/flux-concept")
    vectors = {"clip_l": torch.randn(2, 768), "t5": torch.randn(2, 4096)}
    write_embedding(Embedding("<x>", vectors, {"family": "flux"}), snapshot / "learned_embeds.safetensors")
    (snapshot / "token_identifier.txt").write_text("<my-flux-thing>")
    embedding = resolve_concept("someone/flux-concept")
    assert embedding.token == "<my-flux-thing>" and embedding.family == "flux"
    assert torch.equal(embedding.vectors["t5"], vectors["t5"])
