"""`textual-inversion export`: a run becomes a concept-library folder that loads back here and in diffusers,
and goes to the hub (mocked) or, offline, says how to push it later."""

import json
import shutil

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from textual_inversion import UserError, cli
from textual_inversion.concepts import load_concepts, read_concept, read_concept_library
from textual_inversion.export import export_concept, file_stem
from textual_inversion.formats import read_embedding
from textual_inversion.models import load_pipeline
from textual_inversion.outputs import EMBEDDING, LORA
from textual_inversion.training import train


def prompt_embeddings(pipe, prompt: str) -> torch.Tensor:
    with torch.no_grad():
        return pipe.encode_prompt(prompt, "cpu", 1, False)[0]


def flux_prompt_embeddings(pipe, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Flux's prompt embeddings: T5's sequence and CLIP's pooled vector."""
    with torch.no_grad():
        return pipe.encode_prompt(prompt, None, device="cpu")[:2]


def front_matter(card: str) -> dict:
    """The YAML between the card's two `---` lines."""
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture
def run(train_config, image_folder):
    """A finished 6-step run with a preview grid, trained on the fixture pictures plus one large photo."""
    Image.new("RGB", (900, 700), (30, 200, 90)).save(image_folder / "0-big.png")
    config = train_config.replaced(validation_prompt="a photo of <blob>", validation_every=3, num_validation_images=2,
                                   validation_steps=2)
    return train(config)


def test_export_writes_the_concept_library_layout_and_loads_back(run, tiny_sd1_path, tmp_path):
    folder = tmp_path / "shared"
    result = export_concept(run.output_dir, folder)
    learned = read_embedding(run.embedding_path)

    assert result.folder == folder
    assert set(result.files) == {"README.md", "learned_embeds.safetensors", "learned_embeds.bin", "blob.safetensors",
                                 "token_identifier.txt", "type_of_concept.txt", "preview.jpeg",
                                 *(f"concept_images/{i}.jpeg" for i in range(4))}
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == result.files
    assert (folder / "token_identifier.txt").read_text() == "<blob>"
    assert (folder / "type_of_concept.txt").read_text() == "object"
    # diffusers' layout, the library's pickle and the web UI copy all hold the learned vectors.
    assert set(load_file(folder / "learned_embeds.safetensors")) == {"<blob>"}
    for name in ("learned_embeds.safetensors", "learned_embeds.bin", "blob.safetensors"):
        assert torch.equal(read_embedding(folder / name).vectors["text_encoder"], learned.vectors["text_encoder"]), name
    assert set(load_file(folder / "blob.safetensors")) == {"emb_params"}  # what AUTOMATIC1111 and ComfyUI read
    # Pictures: JPEGs no larger than 512 px (the 900 x 700 one is reduced, keeping its shape).
    sizes = [Image.open(folder / f"concept_images/{i}.jpeg").size for i in range(4)]
    assert (512, 398) in sizes and all(max(size) <= 512 for size in sizes)
    assert Image.open(folder / "preview.jpeg").format == "JPEG"

    card = (folder / "README.md").read_text()
    meta = front_matter(card)
    assert meta["license"] == "creativeml-openrail-m"  # the tiny model is SD 1.x-wide
    assert {"textual_inversion", "diffusers", "text-to-image"} <= set(meta["tags"])
    assert "base_model" not in meta  # a local folder is no hub id; the hub would refuse it
    for usage in ('load_textual_inversion("REPO_ID"', "`embeddings/`", "write `blob`", "embedding:blob",
                  "![training picture 0](concept_images/0.jpeg)", "![preview](preview.jpeg)"):
        assert usage in card, usage

    # Back as a concept: our loader (the folder, or its library files alone) and diffusers' agree.
    concept = read_concept(str(folder))
    assert [kind for kind, _ in concept.parts] == [EMBEDDING]
    assert concept.of_kind(EMBEDDING)[0].token == "<blob>"
    assert torch.equal(concept.of_kind(EMBEDDING)[0].vectors["text_encoder"], learned.vectors["text_encoder"])
    by_diffusers = load_pipeline(tiny_sd1_path)
    by_diffusers.load_textual_inversion(str(folder))
    ours = load_pipeline(tiny_sd1_path)
    assert load_concepts(ours, [str(run.output_dir)]) == ["<blob>"]
    assert torch.equal(prompt_embeddings(by_diffusers, "a photo of <blob>"), prompt_embeddings(ours, "a photo of <blob>"))


def test_a_library_folder_reads_from_either_embedding_file(run, tmp_path):
    learned = read_embedding(run.embedding_path).vectors["text_encoder"]
    export_concept(run.output_dir, tmp_path / "shared")
    for kept in ("learned_embeds.safetensors", "learned_embeds.bin"):
        library = tmp_path / kept
        library.mkdir()
        for name in (kept, "token_identifier.txt"):
            shutil.copy(tmp_path / "shared" / name, library / name)
        (library / "token_identifier.txt").write_text("<renamed>")  # the token file names the word
        embedding = read_concept_library(library)
        assert embedding.token == "<renamed>" and torch.equal(embedding.vectors["text_encoder"], learned)
        assert read_concept(str(library)).of_kind(EMBEDDING)[0].token == "<renamed>"


def test_push_to_hub_offline_keeps_the_folder_and_says_how_to_push(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "shared"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["export", str(run.output_dir), str(folder), "--push-to-hub", "me/blob", "--private"])
    assert exit_.value.code == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1
    assert f"wrote {folder}" in message and f"hf upload me/blob {folder} . --private" in message
    assert (folder / "learned_embeds.safetensors").is_file() and (folder / "README.md").is_file()
    assert 'load_textual_inversion("me/blob"' in (folder / "README.md").read_text()  # the card names the repo


def test_push_to_hub_creates_the_repo_and_uploads_the_folder(run, tmp_path, monkeypatch):
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("textual_inversion.models.probe_hub", lambda: None)  # the hub "answers"
    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    folder = tmp_path / "shared"
    result = export_concept(run.output_dir, folder, push_to_hub="me/blob", private=True)
    assert result.url == "https://huggingface.co/me/blob"
    assert calls[0] == ("create_repo", "me/blob", {"private": True, "exist_ok": True})
    assert calls[1][0] == "upload_folder"
    assert calls[1][1]["repo_id"] == "me/blob" and calls[1][1]["folder_path"] == str(folder)
    assert len(calls) == 2


def test_an_existing_folder_is_refused_unless_overwrite(run, tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="--overwrite"):
        export_concept(run.output_dir, folder)
    assert [p.name for p in folder.iterdir()] == ["mine.txt"]
    with pytest.raises(UserError, match="holds the run"):
        export_concept(run.output_dir, run.output_dir, overwrite=True)
    assert run.embedding_path.is_file()

    export_concept(run.output_dir, folder, overwrite=True)
    assert not (folder / "mine.txt").exists() and (folder / "learned_embeds.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left beside it
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "README.md" in export_concept(run.output_dir, empty).files
    assert "README.md" in export_concept(run.output_dir, tmp_path / "new" / "deeper").files  # parents are made


def test_the_web_ui_file_is_named_after_the_word_without_taking_another_files_name():
    assert file_stem("<my cat>") == "my-cat"
    assert file_stem("<learned_embeds>") == "learned_embeds-word"
    assert file_stem("<>") == "concept"


def test_pivotal_run_exports_its_lora_with_the_word(train_config, tmp_path):
    config = train_config.replaced(method="pivotal", steps=2, kohya_copy=True)
    pivotal = train(config)
    folder = tmp_path / "shared"
    files = export_concept(pivotal.output_dir, folder).files
    assert {"pytorch_lora_weights.safetensors", "blob-lora.safetensors"} <= set(files)
    assert (folder / "pytorch_lora_weights.safetensors").read_bytes() == \
        pivotal.outputs[LORA].read_bytes()
    concept = read_concept(str(folder))
    assert [kind for kind, _ in concept.parts] == [EMBEDDING, LORA]
    card = (folder / "README.md").read_text()
    assert "lora" in front_matter(card)["tags"]
    assert 'load_lora_weights("REPO_ID", weight_name="pytorch_lora_weights.safetensors")' in card
    assert "<lora:blob-lora:1>" in card


def test_runs_without_an_embedding_and_unfinished_runs_are_refused(tmp_path):
    lora_run = tmp_path / "lora-run"
    lora_run.mkdir()
    (lora_run / "pytorch_lora_weights.safetensors").write_bytes(b"")
    (lora_run / "run.json").write_text(json.dumps({"status": "finished", "config": {"method": "lora", "token": "sks"},
                                                   "outputs": {"lora": "pytorch_lora_weights.safetensors"}}))
    with pytest.raises(UserError, match=r"--method textual-inversion.*pivotal.*holds pytorch_lora_weights") as error:
        export_concept(lora_run, tmp_path / "shared")
    assert "\n" not in str(error.value)
    (lora_run / "run.json").write_text(json.dumps({"status": "running", "config": {}}))
    with pytest.raises(UserError, match="has not finished"):
        export_concept(lora_run, tmp_path / "shared")
    assert not (tmp_path / "shared").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["lora-run"]


def transformer_run(model: str, image_folder, tmp_path, **options):
    """A finished 2-step textual-inversion run on a tiny Flux, SD3 or Z-Image model."""
    from textual_inversion import TrainConfig

    return train(TrainConfig(model=model, images=str(image_folder), token="<blob>",
                             options={"init_token": "cat", **options}, steps=2, batch_size=2, resolution=32,
                             output_dir=str(tmp_path / "run")))


def test_a_flux_run_exports_a_comfyui_copy_and_a_card_whose_diffusers_lines_load_it(tiny_flux_path, image_folder,
                                                                                     tmp_path):
    flux = transformer_run(tiny_flux_path, image_folder, tmp_path)
    folder = tmp_path / "shared"
    files = export_concept(flux.output_dir, folder).files
    # No pickle and no AUTOMATIC1111 copy (neither exists for Flux); the copy named after the word is ComfyUI's.
    assert set(files) == {"README.md", "learned_embeds.safetensors", "blob.safetensors", "token_identifier.txt",
                          "type_of_concept.txt", *(f"concept_images/{i}.jpeg" for i in range(4))}
    assert set(load_file(folder / "learned_embeds.safetensors")) == {"clip_l", "t5"}
    assert set(load_file(folder / "blob.safetensors")) == {"clip_l", "t5xxl"}  # ComfyUI's name for T5's vectors
    learned = read_embedding(flux.embedding_path)
    for key in ("clip_l", "t5"):
        assert torch.equal(read_embedding(folder / "blob.safetensors").vectors[key], learned.vectors[key])

    card = (folder / "README.md").read_text()
    meta = front_matter(card)
    assert (meta["license"], meta["license_name"]) == ("other", "flux-1-dev-non-commercial-license")
    assert {"textual_inversion", "diffusers", "flux", "text-to-image"} <= set(meta["tags"])
    assert "stable-diffusion" not in meta["tags"] and "AUTOMATIC1111" not in card
    lines = [f'pipe.load_textual_inversion(vectors["{key}"], token="<blob>", text_encoder=pipe.{encoder}, '
             f'tokenizer=pipe.{tokenizer})' for key, encoder, tokenizer in
             (("clip_l", "text_encoder", "tokenizer"), ("t5", "text_encoder_2", "tokenizer_2"))]
    for usage in (*lines, "embedding:blob", "`t5xxl`", f"--model {tiny_flux_path} --concept path/to/this/folder"):
        assert usage in card, usage

    # The card's diffusers lines and our loader (given the folder) give the same prompt embeddings.
    by_diffusers = load_pipeline(tiny_flux_path)
    vectors = load_file(folder / "learned_embeds.safetensors")
    by_diffusers.load_textual_inversion(vectors["clip_l"], token="<blob>", text_encoder=by_diffusers.text_encoder,
                                        tokenizer=by_diffusers.tokenizer)
    by_diffusers.load_textual_inversion(vectors["t5"], token="<blob>", text_encoder=by_diffusers.text_encoder_2,
                                        tokenizer=by_diffusers.tokenizer_2)
    ours = load_pipeline(tiny_flux_path)
    assert load_concepts(ours, [str(folder)]) == ["<blob>"]
    theirs = flux_prompt_embeddings(by_diffusers, "a photo of <blob>")
    mine = flux_prompt_embeddings(ours, "a photo of <blob>")
    assert all(torch.equal(a, b) for a, b in zip(theirs, mine, strict=True))
    assert not torch.equal(mine[0], flux_prompt_embeddings(ours, "a photo of cat")[0])  # the word was learned


def test_a_flux_word_learned_by_one_encoder_is_loaded_into_that_one(tiny_flux_path, image_folder, tmp_path):
    flux = transformer_run(tiny_flux_path, image_folder, tmp_path, ti_encoders="t5")
    export_concept(flux.output_dir, tmp_path / "shared")
    assert set(load_file(tmp_path / "shared" / "blob.safetensors")) == {"t5xxl"}
    card = (tmp_path / "shared" / "README.md").read_text()
    assert 'vectors["t5"]' in card and 'vectors["clip_l"]' not in card
    assert "`clip_l` reads the word as plain text" in card


@pytest.mark.parametrize("family, copy_keys, license", [
    ("sd3", {"clip_l", "clip_g", "t5xxl"}, ("other", "stabilityai-ai-community")),
    ("z-image", None, ("apache-2.0", None)),  # no other tool reads a Z-Image file: no copy for a UI
])
def test_sd3_and_z_image_runs_export_for_comfyui_where_it_reads_them_and_point_to_our_loader(
        family, copy_keys, license, request, image_folder, tmp_path):
    model = request.getfixturevalue(f"tiny_{family.replace('-', '_')}_path")
    run = transformer_run(model, image_folder, tmp_path)
    folder = tmp_path / "shared"
    files = set(export_concept(run.output_dir, folder).files)
    assert "learned_embeds.bin" not in files and "learned_embeds.safetensors" in files
    assert ("blob.safetensors" in files) == (copy_keys is not None)
    if copy_keys:
        assert set(load_file(folder / "blob.safetensors")) == copy_keys

    card = (folder / "README.md").read_text()
    meta = front_matter(card)
    assert (meta["license"], meta.get("license_name")) == license
    assert family in meta["tags"] and "diffusers" not in meta["tags"]  # diffusers has no loader for these
    assert "load_textual_inversion(" not in card and "AUTOMATIC1111" not in card
    assert ("## Use it in ComfyUI" in card) == (copy_keys is not None)
    assert f"textual-inversion generate --model {model} --concept path/to/this/folder" in card

    concept = read_concept(str(folder))  # what the card's command loads
    assert concept.of_kind(EMBEDDING)[0].family == family
    assert load_concepts(load_pipeline(model), [str(folder)]) == ["<blob>"]
