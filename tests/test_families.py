"""The transformer families (Flux.1, SD3, Z-Image) end to end on their tiny random pipelines: what Textual
Inversion, LoRA and pivotal tuning change, the files they write and who loads them, generation with the result,
resume, and the refusals of what only the UNet families support.

Every run is tiny (32 px, batch 2, 2-4 steps, 2-step sampling at 32x32); the Textual Inversion run of each
family is trained once per module and shared (`ti_run`), so the whole file stays fast on one CPU core.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from textual_inversion import GenerateConfig, TrainConfig, UserError, generate, load_concepts, train
from textual_inversion.cli import main
from textual_inversion.embedding import TRANSFORMER_KEYS
from textual_inversion.formats import Embedding, family_label, read_embedding, write_embedding
from textual_inversion.models import denoiser, load_pipeline, model_family, prompt_arguments, text_encoders
from textual_inversion.tokens import placeholder_token_names
from textual_inversion.training import TrainResult

FAMILIES = ("flux", "sd3", "z-image")
TOKEN = "<blob>"
VECTORS = 2
PROMPT = f"a photo of {TOKEN} on the beach"
WIDTHS = {"clip_l": 768, "clip_g": 1280, "t5": 4096, "qwen3": 2560}  # the real models' widths, as the tiny ones have


@dataclasses.dataclass
class Run:
    """A finished Textual Inversion run and the pipeline it trained (which holds the token now)."""

    family: str
    model: str  # the tiny model's folder
    pipe: object
    result: TrainResult


@pytest.fixture(scope="module")
def model_paths(tiny_flux_path, tiny_sd3_path, tiny_z_image_path) -> dict[str, str]:
    return {"flux": tiny_flux_path, "sd3": tiny_sd3_path, "z-image": tiny_z_image_path}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> str:
    from tests.conftest import draw_subject

    folder = tmp_path_factory.mktemp("pictures")
    for index in range(4):
        draw_subject(folder / f"{index}.png", index)
    return str(folder)


def run_config(model: str, pictures: str, output_dir: Path, **values) -> TrainConfig:
    """A tiny run on `model`: 4 steps at 32 px, batch 2, a checkpoint every 2 steps; `values` (flat, as on the
    command line) change it. Methods that add a token start it from "cat" with 2 vectors."""
    settings = dict(model=model, images=pictures, token=TOKEN, output_dir=str(output_dir), steps=4, lr=0.05,
                    batch_size=2, resolution=32, checkpoint_every=2, device="cpu")
    if values.get("method", "textual-inversion") in ("textual-inversion", "pivotal"):
        settings.update(init_token="cat", vectors=VECTORS)
    return TrainConfig.from_values({**settings, **values})


@pytest.fixture(scope="module")
def ti_run(model_paths, pictures, tmp_path_factory) -> Callable[[str], Run]:
    """family -> its Textual Inversion run (`run_config`'s defaults), trained the first time it is asked for."""
    runs: dict[str, Run] = {}

    def run(family: str) -> Run:
        if family not in runs:
            pipe = load_pipeline(model_paths[family])
            config = run_config(model_paths[family], pictures, tmp_path_factory.mktemp(f"ti-{family}") / "run",
                                validation_prompt=f"a photo of {TOKEN}", validation_every=4, num_validation_images=2,
                                validation_steps=2)
            runs[family] = Run(family, model_paths[family], pipe, train(config, pipe=pipe))
        return runs[family]

    return run


def networks(pipe) -> dict[str, torch.nn.Module]:
    """Every network of the pipeline: each text encoder (by its file key), the transformer and the VAE."""
    return {**{key: encoder for key, _, encoder in text_encoders(pipe)}, "transformer": denoiser(pipe), "vae": pipe.vae}


def tokenizers(pipe) -> dict:
    return {key: tokenizer for key, tokenizer, _ in text_encoders(pipe)}


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def token_matrix_keys(encoder: torch.nn.Module) -> set[str]:
    """The state-dict names of the encoder's token embedding matrix (T5 holds it twice: `shared`, `embed_tokens`)."""
    matrix = encoder.get_input_embeddings().weight
    return {key for key, value in encoder.state_dict().items() if value.data_ptr() == matrix.data_ptr()}


@torch.no_grad()
def encode(pipe, prompt: str) -> torch.Tensor:
    """Everything `encode_prompt` hands the transformer for `prompt`, flattened into one vector. The prompt goes in
    as generation passes it (`prompt_arguments`: multi-vector tokens spelled out for SD3 and Z-Image)."""
    arguments = prompt_arguments(pipe, prompt)
    family = model_family(pipe)
    if family == "flux":
        embeds, pooled, _ = pipe.encode_prompt(**arguments, device="cpu", max_sequence_length=32)
        outputs = [embeds, pooled]
    elif family == "sd3":
        embeds, _, pooled, _ = pipe.encode_prompt(**arguments, device="cpu", do_classifier_free_guidance=False,
                                                  max_sequence_length=32)
        outputs = [embeds, pooled]
    else:
        outputs = pipe.encode_prompt(**arguments, device="cpu", do_classifier_free_guidance=False)[0]
    return torch.cat([tensor.flatten() for tensor in outputs])


@torch.no_grad()
def sample(pipe, prompt: str, seed: int = 0) -> np.ndarray:
    """A 2-step 32x32 picture, as floats (no rounding to 8 bits hides a small change)."""
    pipe.set_progress_bar_config(disable=True)
    return pipe(**prompt_arguments(pipe, prompt), height=32, width=32, num_inference_steps=2,
                generator=torch.Generator().manual_seed(seed), output_type="np").images


def run_cli(*args: str) -> int:
    """`textual-inversion ARGS` in this process; its exit code."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code


# Textual Inversion: what changes, what the file holds, who loads it


@pytest.mark.parametrize("family", FAMILIES)
def test_textual_inversion_changes_only_the_new_rows(family, ti_run):
    run = ti_run(family)
    saved = read_embedding(run.result.embedding_path)
    fresh = load_pipeline(run.model)
    trained, base = networks(run.pipe), networks(fresh)
    assert trained.keys() == base.keys()
    for name, module in base.items():
        before, after = weights(module), weights(trained[name])
        assert before.keys() == after.keys(), f"{name}: the training left modules behind"
        matrices = token_matrix_keys(trained[name]) if name in saved.vectors else set()
        assert all(torch.equal(before[key], after[key]) for key in before if key not in matrices), \
            f"{name}: frozen weights changed"
        if not matrices:
            continue
        ids = tokenizers(run.pipe)[name].convert_tokens_to_ids(placeholder_token_names(TOKEN, VECTORS))
        first, end = ids[0], ids[-1] + 1
        assert ids == list(range(first, end))
        cat = tokenizers(fresh)[name].encode("cat", add_special_tokens=False)
        for key in matrices:
            assert torch.equal(after[key][:first], before[key][:first]), f"{name}: a pretrained row changed"
            assert torch.equal(after[key][end:], before[key][end:]), f"{name}: a spare row changed"
            assert torch.equal(after[key][first:end], saved.vectors[name])
            assert not torch.allclose(saved.vectors[name], before[key][cat].mean(0).expand(VECTORS, -1)), \
                f"{name}: the token did not learn"


@pytest.mark.parametrize("family", FAMILIES)
def test_previews_are_drawn_at_the_training_resolution(family, ti_run):
    grid = Image.open(ti_run(family).result.output_dir / "previews" / "step-000004.png")
    assert grid.size == (64, 32)  # two 32 px previews side by side, not the pipeline's default size


@pytest.mark.parametrize("family", FAMILIES)
def test_the_embedding_file_gives_a_fresh_pipeline_the_trained_ones_prompt_embeddings(family, ti_run):
    run = ti_run(family)
    embedding = read_embedding(run.result.embedding_path)
    assert (embedding.token, embedding.family, embedding.num_vectors) == (TOKEN, family, VECTORS)
    assert embedding.widths() == {key: WIDTHS[key] for key in TRANSFORMER_KEYS[family]}
    fresh = load_pipeline(run.model)
    assert load_concepts(fresh, [str(run.result.embedding_path)]) == [TOKEN]
    assert torch.equal(encode(fresh, PROMPT), encode(run.pipe, PROMPT))


def test_diffusers_loads_the_flux_clip_l_vectors_as_ours_does(ti_run):
    """Flux has diffusers' TextualInversionLoaderMixin: its loader, given our file's clip_l vectors, and ours agree."""

    @torch.no_grad()
    def clip_features(pipe) -> tuple[torch.Tensor, torch.Tensor]:
        text = pipe.maybe_convert_prompt(PROMPT, pipe.tokenizer)  # as FluxPipeline.encode_prompt spells it out
        ids = pipe.tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        output = pipe.text_encoder(ids)
        return ids, torch.cat([output.last_hidden_state.flatten(), output.pooler_output.flatten()])

    run = ti_run("flux")
    embedding = read_embedding(run.result.embedding_path)
    ours, theirs = load_pipeline(run.model), load_pipeline(run.model)
    load_concepts(ours, [embedding])
    theirs.load_textual_inversion(embedding.vectors["clip_l"], token=TOKEN, text_encoder=theirs.text_encoder,
                                  tokenizer=theirs.tokenizer)
    (our_ids, our_features), (their_ids, their_features) = clip_features(ours), clip_features(theirs)
    new_ids = theirs.tokenizer.convert_tokens_to_ids(placeholder_token_names(TOKEN, VECTORS))
    assert torch.equal(our_ids, their_ids) and set(new_ids) <= set(their_ids[0].tolist())
    assert torch.equal(our_features, their_features)


# --ti-encoders


@pytest.mark.parametrize("family,choice", [("flux", "clip_l"), ("sd3", "t5")])
def test_ti_encoders_picks_the_encoders_that_learn(family, choice, model_paths, pictures, tmp_path):
    pipe = load_pipeline(model_paths[family])
    result = train(run_config(model_paths[family], pictures, tmp_path / "run", steps=2, ti_encoders=choice), pipe=pipe)
    embedding = read_embedding(result.embedding_path)
    assert set(load_file(result.embedding_path)) == {choice}
    assert embedding.family == family  # the file's metadata names it: t5 alone would fit Flux and SD3 alike
    fresh = load_pipeline(model_paths[family])
    for key, tokenizer in tokenizers(pipe).items():
        assert (TOKEN in tokenizer.get_vocab()) == (key == choice), key
    for key, module in networks(fresh).items():
        if key != choice:  # the other encoders are untouched, their matrices not grown
            before, after = weights(module), weights(networks(pipe)[key])
            assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before), key
    assert load_concepts(fresh, [str(result.output_dir)]) == [TOKEN]
    assert {key for key, tokenizer in tokenizers(fresh).items() if TOKEN in tokenizer.get_vocab()} == {choice}
    assert torch.equal(encode(fresh, PROMPT), encode(pipe, PROMPT))


def test_flux_t5_runs_once_per_prompt_where_only_clip_l_learns(model_paths, pictures, tmp_path):
    import shutil

    from textual_inversion.flow_matching import flow_conditioning

    captioned = tmp_path / "captioned"
    shutil.copytree(pictures, captioned)
    for index, picture in enumerate(sorted(captioned.glob("*.png"))):  # two captions between four pictures
        picture.with_suffix(".txt").write_text("a photo of {token}" if index % 2 else "a {token} on the beach")
    pipe = load_pipeline(model_paths["flux"])
    calls = []
    pipe.text_encoder_2.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    train(run_config(model_paths["flux"], str(captioned), tmp_path / "run", steps=6, ti_encoders="clip_l"), pipe=pipe)
    assert calls == [1, 1]  # each caption's T5 output once, alone, over 6 steps of 2 pictures
    texts, cpu = ["a photo of <blob>", "a <blob> on the beach"], torch.device("cpu")
    kept = {}
    cached, fresh = flow_conditioning(pipe, texts, cpu, kept), flow_conditioning(pipe, texts, cpu)
    assert {key for key, _ in kept} == {"clip_l", "t5"}  # trained: nothing learns any more
    for name in ("encoder_hidden_states", "pooled_projections"):  # alone or in a batch: the same to rounding
        assert torch.allclose(cached[name], fresh[name], atol=1e-6), name
    pipe.text_encoder.get_input_embeddings().weight.requires_grad_(True)
    learning = {}
    assert flow_conditioning(pipe, texts, cpu, learning)["pooled_projections"].requires_grad
    assert {key for key, _ in learning} == {"t5"}  # CLIP-L learns: computed every time


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_the_conditioning_is_the_pipelines_own_and_frozen_encoders_run_once_per_prompt(family, model_paths):
    from textual_inversion.flow_matching import flow_conditioning

    pipe = load_pipeline(model_paths[family])
    for _, _, encoder in text_encoders(pipe):  # as `train` freezes them where nothing in them learns
        encoder.requires_grad_(False)
    texts, cpu = ["a photo of a cat", "a dog on the beach", "a photo of a cat"], torch.device("cpu")
    if family == "flux":
        embeds, pooled, _ = pipe.encode_prompt(texts, device=cpu)
    else:
        embeds, _, pooled, _ = pipe.encode_prompt(texts, texts, texts, device=cpu, do_classifier_free_guidance=False)
    kept = {}
    for frozen_outputs in (None, kept, kept):  # computed, kept, read back
        conditioning = flow_conditioning(pipe, texts, cpu, frozen_outputs)
        # (each prompt alone, or in a batch of three: the same to rounding)
        assert torch.allclose(conditioning["encoder_hidden_states"], embeds, atol=1e-6)
        assert torch.allclose(conditioning["pooled_projections"], pooled, atol=1e-6)
    assert {prompt for _, prompt in kept} == set(texts) and len(kept) == 2 * len(TRANSFORMER_KEYS[family])
    calls = []
    for _, _, encoder in text_encoders(pipe):
        encoder.register_forward_hook(lambda *_: calls.append(1))
    flow_conditioning(pipe, texts, cpu, kept)
    assert calls == []


@pytest.mark.parametrize("family", FAMILIES)
def test_an_unknown_ti_encoder_is_refused_naming_the_models_encoders(family, model_paths, pictures, tmp_path):
    config = run_config(model_paths[family], pictures, tmp_path / "run", ti_encoders="clip_l,vit")
    keys = ", ".join(TRANSFORMER_KEYS[family])
    with pytest.raises(UserError, match=re.escape(f"--ti-encoders clip_l,vit: this model's text encoders are {keys}")):
        train(config)
    assert not (tmp_path / "run").exists()


def test_ti_encoders_is_refused_on_sd1(tiny_sd1_path, pictures, tmp_path):
    config = run_config(tiny_sd1_path, pictures, tmp_path / "run", ti_encoders="text_encoder")
    with pytest.raises(UserError, match="--ti-encoders text_encoder: on this model every text encoder learns"):
        train(config)
    assert not (tmp_path / "run").exists()


# LoRA and pivotal tuning


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_loads_with_the_pipelines_own_loader_and_changes_the_pictures(family, model_paths, pictures, tmp_path):
    model = model_paths[family]
    pipe = load_pipeline(model)
    frozen = weights(pipe.transformer)
    result = train(run_config(model, pictures, tmp_path / "run", method="lora", lr=1e-2, rank=2, steps=2), pipe=pipe)
    assert {kind: path.name for kind, path in result.outputs.items()} == {"lora": "pytorch_lora_weights.safetensors"}
    lora = load_file(result.outputs["lora"])  # peft's names, as diffusers' Flux and SD3 scripts save them
    assert lora and all(key.startswith("transformer.") and re.search(r"\.lora_[AB]\.weight$", key) for key in lora)
    # SD3's last joint block (here its only one) keeps no text output, so the text queries (add_q_proj) get no gradient.
    idle = {"transformer.transformer_blocks.0.attn.add_q_proj.lora_B.weight"} if family == "sd3" else set()
    learned = {key for key, value in lora.items() if ".lora_B." in key and value.abs().sum() > 0}
    assert learned == {key for key in lora if ".lora_B." in key} - idle, "some B matrices learned nothing"
    base = {key.replace(".base_layer", ""): value for key, value in weights(pipe.transformer).items() if "lora" not in key}
    assert base.keys() == frozen.keys() and all(torch.equal(frozen[key], base[key]) for key in frozen)

    loaded = load_pipeline(model)
    without = sample(loaded, PROMPT)
    loaded.load_lora_weights(str(result.output_dir))
    with_lora = sample(loaded, PROMPT)
    assert np.abs(with_lora - without).max() > 1e-3
    assert np.abs(with_lora - sample(pipe, PROMPT)).max() < 1e-5  # the trained pipeline's own adapters


@pytest.mark.parametrize("family", FAMILIES)
def test_pivotal_writes_the_embedding_and_the_lora_which_load_as_one_concept(family, model_paths, pictures, tmp_path):
    model = model_paths[family]
    pipe = load_pipeline(model)
    config = run_config(model, pictures, tmp_path / "run", method="pivotal", lora_lr=1e-2, rank=2, steps=2)
    result = train(config, pipe=pipe)
    assert {kind: path.name for kind, path in result.outputs.items()} == {
        "embedding": "learned_embeds.safetensors", "lora": "pytorch_lora_weights.safetensors"}
    embedding = read_embedding(result.outputs["embedding"])
    assert embedding.family == family and set(embedding.vectors) == set(TRANSFORMER_KEYS[family])
    assert all(key.startswith("transformer.") for key in load_file(result.outputs["lora"]))

    fresh = load_pipeline(model)
    assert load_concepts(fresh, [str(result.output_dir)]) == [TOKEN]
    assert fresh.get_active_adapters()
    assert np.abs(sample(fresh, PROMPT) - sample(pipe, PROMPT)).max() < 1e-5


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method,option", [("lora", "kohya_copy"), ("pivotal", "bundle")])
def test_the_kohya_layouts_are_refused(family, method, option, model_paths, pictures, tmp_path):
    config = run_config(model_paths[family], pictures, tmp_path / "run", method=method, **{option: True})
    flag = "--" + option.replace("_", "-")
    with pytest.raises(UserError, match=rf"^{flag}: .*SD 1\.x, 2\.x and XL.*not {family}; leave it out"):
        train(config)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_dreambooth_is_refused_naming_the_family(family, model_paths, pictures, tmp_path):
    config = run_config(model_paths[family], pictures, tmp_path / "run", method="dreambooth", lr=1e-4)
    with pytest.raises(UserError, match=f"--method dreambooth: not available for {family} models; use textual-inversion"):
        train(config)
    assert not (tmp_path / "run").exists()


# Generation


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_with_the_learned_token(family, ti_run, tmp_path):
    run = ti_run(family)

    def pictures(prompt: str, folder: str, concepts: list[str], num_images: int = 1) -> list[Path]:
        config = GenerateConfig(model=run.model, concept=concepts, prompt=prompt, num_images=num_images, steps=2,
                                width=32, height=32, seed=5, device="cpu", output_dir=str(tmp_path / folder))
        return generate(config)

    def pixels(path: Path) -> np.ndarray:
        return np.asarray(Image.open(path))

    concept = [str(run.result.output_dir)]
    first, second = pictures(PROMPT, "two", concept, num_images=2)
    (again,) = pictures(PROMPT, "again", concept)
    (without,) = pictures(PROMPT.replace(f"{TOKEN} ", ""), "without", [])
    assert np.array_equal(pixels(first), pixels(again)), "the same seed gave another picture"
    assert not np.array_equal(pixels(first), pixels(second)), "seeds 5 and 6 gave the same picture"
    assert not np.array_equal(pixels(first), pixels(without)), "the learned token changed nothing"
    parameters = Image.open(first).text["parameters"]
    assert parameters.splitlines()[0] == PROMPT
    guidance = {"flux": 3.5, "sd3": 7.0, "z-image": 5.0}[family]  # no --guidance: the pipeline's own default
    assert parameters.splitlines()[1] == (f"Steps: 2, Sampler: FlowMatchEulerDiscreteScheduler, CFG scale: {guidance}, "
                                          f"Seed: 5, Size: 32x32, Model: {run.model}, Concepts: run")
    assert Image.open(tmp_path / "two" / "grid.png").size == (64, 32)


@pytest.mark.parametrize("family", FAMILIES)
def test_two_concepts_at_once(family, ti_run, tmp_path):
    """A second token (the same vectors renamed, scaled so it draws otherwise) loads beside the first; each word
    in the prompt draws its own vectors, spelled out per tokenizer where the pipeline does not do it."""
    run = ti_run(family)
    learned = read_embedding(run.result.embedding_path)
    other = Embedding("<other>", {key: vectors * 3 for key, vectors in learned.vectors.items()}, learned.metadata)
    other_file = write_embedding(other, tmp_path / "other.safetensors")

    def picture(prompt: str, concepts: list[str], folder: str) -> np.ndarray:
        config = GenerateConfig(model=run.model, concept=concepts, prompt=prompt, num_images=1, steps=2, width=32,
                                height=32, seed=5, device="cpu", output_dir=str(tmp_path / folder))
        return np.asarray(Image.open(generate(config)[0]))

    both = [str(run.result.output_dir), str(other_file)]
    first = picture(f"a photo of {TOKEN}", both, "first")
    assert np.array_equal(first, picture(f"a photo of {TOKEN}", both[:1], "alone"))  # the other loads beside it
    assert not np.array_equal(first, picture("a photo of <other>", both, "second"))
    assert not np.array_equal(first, picture(f"a photo of {TOKEN} and <other>", both, "together"))


@pytest.mark.parametrize("family", FAMILIES)
def test_sd_only_generation_options_are_refused(family, model_paths, tmp_path):
    config = GenerateConfig(model=model_paths[family], prompt="a photo of the cat", num_images=1, steps=2, width=32,
                            height=32, device="cpu", output_dir=str(tmp_path / "out"))
    with pytest.raises(UserError, match=f"--scheduler ddim: {family} samples with its own flow-matching scheduler"):
        generate(dataclasses.replace(config, scheduler="ddim"))
    with pytest.raises(UserError, match=rf"--prompt: weights like \(word:1\.3\) work with SD 1\.x, 2\.x and XL, "
                                        f"not {family}"):
        generate(dataclasses.replace(config, prompt="a photo of the (cat:1.3)"))
    assert not (tmp_path / "out").exists()


# Resume


@pytest.mark.parametrize("family", FAMILIES)
def test_resume_gives_the_same_embedding_as_an_uninterrupted_run(family, ti_run, pictures, tmp_path):
    straight = ti_run(family).result  # 4 steps, a checkpoint at step 2
    config = run_config(ti_run(family).model, pictures, tmp_path / "run", steps=2)
    assert train(config).steps == 2
    resumed = train(dataclasses.replace(config, steps=4, resume=True))
    expected, got = load_file(straight.embedding_path), load_file(resumed.embedding_path)
    assert expected.keys() == got.keys() and all(torch.equal(expected[key], got[key]) for key in expected)
    assert [row[1] for row in resumed.loss_history] == [row[1] for row in straight.loss_history]


def test_resume_of_pivotal_tuning_gives_the_same_files(model_paths, pictures, tmp_path):
    """The transformer's LoRA state resumes as the embedding does (one family: the adapters are peft's on all)."""
    config = run_config(model_paths["flux"], pictures, tmp_path / "straight", method="pivotal", lora_lr=1e-2, rank=2)
    straight = train(config)
    config = dataclasses.replace(config, output_dir=str(tmp_path / "resumed"), steps=2)
    train(config)
    resumed = train(dataclasses.replace(config, steps=4, resume=True))
    for kind in ("embedding", "lora"):
        expected, got = load_file(straight.outputs[kind]), load_file(resumed.outputs[kind])
        assert expected.keys() == got.keys() and all(torch.equal(expected[key], got[key]) for key in expected), kind


# Files


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_comfyui_format_names_t5_t5xxl_and_reads_back_as_t5(family, ti_run, tmp_path):
    embedding = read_embedding(ti_run(family).result.embedding_path)
    path = write_embedding(embedding, tmp_path / "comfy.safetensors", "comfyui")
    assert set(load_file(path)) == (set(TRANSFORMER_KEYS[family]) - {"t5"}) | {"t5xxl"}
    back = read_embedding(path)
    assert (back.token, back.family) == (TOKEN, family)
    assert back.vectors.keys() == embedding.vectors.keys()
    assert all(torch.equal(back.vectors[key], embedding.vectors[key]) for key in embedding.vectors)


def test_convert_command_writes_the_comfyui_layout(ti_run, tmp_path, capsys):
    source = ti_run("flux").result.embedding_path
    target = tmp_path / "comfy.safetensors"
    code = run_cli("convert", str(source), str(target), "--format", "comfyui")
    assert code == 0, capsys.readouterr().err
    assert set(load_file(target)) == {"clip_l", "t5xxl"}
    back, original = read_embedding(target), read_embedding(source)
    assert all(torch.equal(back.vectors[key], original.vectors[key]) for key in ("clip_l", "t5"))


@pytest.mark.parametrize("format,name", [
    ("a1111", "flux.pt"), ("a1111", "flux.safetensors"), ("kohya", "flux.safetensors"),
    ("a1111-png", "flux.png"),
])
def test_sd_only_formats_are_refused_for_flux(format, name, ti_run, tmp_path):
    embedding = read_embedding(ti_run("flux").result.embedding_path)
    with pytest.raises(UserError, match=f"--format {format}: {re.escape(family_label('flux'))} embeddings are written as"):
        write_embedding(embedding, tmp_path / name, format)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("file_family,model_family", [
    ("flux", "sd3"), ("flux", "sd1"), ("sd1", "flux"), ("sd3", "flux"), ("z-image", "sd3"), ("flux", "z-image")])
def test_an_embedding_of_another_family_is_refused(file_family, model_family, ti_run, model_paths, tiny_sd1_path,
                                                   tmp_path):
    if file_family == "sd1":
        file = write_embedding(Embedding("<old>", {"text_encoder": torch.randn(2, 768)}), tmp_path / "sd1.safetensors")
    else:
        file = ti_run(file_family).result.embedding_path
    pipe = load_pipeline(tiny_sd1_path if model_family == "sd1" else model_paths[model_family])
    vocabularies = [len(tokenizer) for tokenizer in tokenizers(pipe).values()]
    with pytest.raises(UserError, match=rf"fit {re.escape(family_label(file_family))}, but the model "
                                        rf"\({model_family}\) needs"):
        load_concepts(pipe, [str(file)])
    assert [len(tokenizer) for tokenizer in tokenizers(pipe).values()] == vocabularies  # nothing was added


@pytest.mark.parametrize("family", FAMILIES)
def test_inspect_prints_each_encoders_width_and_nearest_words(family, ti_run, capsys):
    run = ti_run(family)
    assert run_cli("inspect", str(run.result.embedding_path), "--model", run.model, "--top", "2") == 0
    output = capsys.readouterr().out
    lines = {line.split(":")[0]: line.split(":", 1)[1].strip() for line in output.splitlines() if ":" in line}
    assert sorted(lines["width"].split(", ")) == sorted(f"{key} {WIDTHS[key]}" for key in TRANSFORMER_KEYS[family])
    assert lines["fits"] == family_label(family)
    assert lines["token"] == TOKEN and lines["vectors"] == str(VECTORS)
    for key in TRANSFORMER_KEYS[family]:
        assert f"nearest words ({key}, cosine similarity):" in output


def test_inspect_with_the_model_takes_a_file_of_some_encoders(model_paths, tmp_path, capsys):
    file = write_embedding(Embedding(TOKEN, {"clip_l": torch.randn(VECTORS, 768)}, {"family": "flux"}),
                           tmp_path / "clip_l.safetensors")
    assert run_cli("inspect", str(file), "--model", model_paths["flux"]) == 0
    output = capsys.readouterr().out
    assert "nearest words (clip_l, cosine similarity):" in output and "nearest words (t5" not in output


# The command line


@pytest.mark.parametrize("family", FAMILIES)
def test_the_commands_train_pivotal_tuning_and_generate_with_it(family, model_paths, pictures, tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", "--model", model_paths[family], "--images", pictures, "--token", TOKEN, "--method",
                   "pivotal", "--init-token", "cat", "--steps", "2", "--batch-size", "2", "--resolution", "32",
                   "--output-dir", str(run)) == 0
    assert (run / "learned_embeds.safetensors").is_file() and (run / "pytorch_lora_weights.safetensors").is_file()
    out = tmp_path / "out"
    assert run_cli("generate", "--model", model_paths[family], "--concept", str(run), "--prompt", PROMPT,
                   "--steps", "2", "--width", "32", "--height", "32", "--num-images", "1", "--output-dir", str(out)) == 0
    assert Image.open(out / "000000.png").text["parameters"].startswith(PROMPT)
