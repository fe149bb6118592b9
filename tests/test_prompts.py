"""Prompt weights `(word:1.3)` as AUTOMATIC1111 users write them, applied by compel, and negative embeddings."""

import numpy as np
import pytest
import torch
from PIL import Image

from textual_inversion import GenerateConfig, UserError, generate
from textual_inversion.concepts import load_concepts, undefined_tokens
from textual_inversion.formats import Embedding, write_embedding
from textual_inversion.models import load_pipeline
from textual_inversion.prompts import has_weights, parse_weights, prompt_embeddings

TO_MINUS = 1 / 1.1


@pytest.mark.parametrize(("prompt", "runs"), [
    ("a (cat:1.3) on the beach", [("a ", 1.0), ("cat", 1.3), (" on the beach", 1.0)]),
    ("(cat) [dog]", [("cat", 1.1), (" ", 1.0), ("dog", TO_MINUS)]),
    ("((cat))", [("cat", 1.1 * 1.1)]),
    ("(a (b:2):0.5)", [("a ", 0.5), ("b", 1.0)]),  # nested weights multiply
    ("( b : 1.2 )", [(" b ", 1.2)]),
    ("a (b", [("a ", 1.0), ("b", 1.1)]),  # a group left open runs to the end, as in A1111
    ("a :) b", [("a :) b", 1.0)]),  # a stray `)` is text
    (r"\(x\) \[y\] \\", [(r"(x) [y] \ ".rstrip(), 1.0)]),
    ("[(cat:1.2)]", [("cat", 1.2 * TO_MINUS)]),
    ("(<my-cat>:1.2)", [("<my-cat>", 1.2)]),
    ("", []),
])
def test_a1111_syntax_reads_as_weighted_runs(prompt, runs):
    parsed = parse_weights(prompt)
    assert [text for text, _ in parsed] == [text for text, _ in runs]
    assert [weight for _, weight in parsed] == pytest.approx([weight for _, weight in runs])


def test_only_prompts_with_syntax_count_as_weighted_and_tokens_are_found_inside_groups():
    assert not has_weights("a photo of <my-cat> on the beach") and not has_weights("a cat :)") and not has_weights(None)
    assert has_weights("a (cat:1.0)") and has_weights("[cat]") and has_weights(r"a \(cat\)")
    assert undefined_tokens("a (<my-cat>:1.2) on [<other>]", VocabOnly()) == ["<my-cat>", "<other>"]


class VocabOnly:
    """A tokenizer that knows no learned tokens; `undefined_tokens` only asks for the vocabulary."""

    def get_vocab(self):
        return {"a</w>": 0}


@pytest.mark.parametrize(("prompt", "message"), [
    ("a [cat:dog:0.5]", r"--prompt 'a \[cat:dog:0.5\]': AUTOMATIC1111's prompt editing"),
    ("a [cat|dog]", "prompt editing"),
    ("a (cat:-1)", "weight -1 is negative"),
])
def test_syntax_compel_cannot_apply_is_refused_naming_the_option(prompt, message):
    with pytest.raises(UserError, match=message):
        parse_weights(prompt, "--prompt")


def pipeline_with_token(path: str, family: str, token: str = "<my-cat>", vectors: int = 3, seed: int = 0):
    """The tiny pipeline with a learned token of `vectors` vectors loaded, as `generate` loads one."""
    generator = torch.Generator().manual_seed(seed)
    widths = {"text_encoder": 768} if family == "sd1" else {"clip_l": 768, "clip_g": 1280}
    pipe = load_pipeline(path)
    load_concepts(pipe, [Embedding(token, {name: torch.randn(vectors, width, generator=generator)
                                           for name, width in widths.items()})])
    return pipe


def pipeline_encoding(pipe, prompt: str, negative_prompt: str | None) -> dict[str, torch.Tensor]:
    """The pipeline's own encoding of plain text, under the keyword names `prompt_embeddings` returns."""
    encoded = pipe.encode_prompt(prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
                                 negative_prompt=negative_prompt)
    names = ["prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
    return dict(zip(names, encoded, strict=False))


@pytest.fixture(params=["sd1", "sdxl"])
def family_pipe(request):
    path = request.getfixturevalue(f"tiny_{request.param}_path")
    return request.param, pipeline_with_token(path, request.param)


@pytest.mark.parametrize("negative_prompt", [None, "(blurry:1.0)"])
def test_weight_one_gives_the_pipelines_own_embeddings(family_pipe, negative_prompt):
    family, pipe = family_pipe
    weighted = prompt_embeddings(pipe, "a (photo:1.0) of (<my-cat>:1) on the beach", negative_prompt)
    plain = pipeline_encoding(pipe, "a photo of <my-cat> on the beach", negative_prompt and "blurry")
    assert set(weighted) == set(plain)  # the pooled pair too on SDXL
    for name, tensor in plain.items():
        torch.testing.assert_close(weighted[name], tensor, msg=name)


def test_a_weight_changes_its_words_only(family_pipe):
    family, pipe = family_pipe
    plain = pipeline_encoding(pipe, "a photo of the cat", None)["prompt_embeds"]
    weighted = prompt_embeddings(pipe, "a photo of the (cat:1.3)", None)["prompt_embeds"]
    ids = pipe.tokenizer("a photo of the cat").input_ids
    cat = ids.index(pipe.tokenizer.convert_tokens_to_ids("cat</w>"))
    changed = (weighted - plain).abs().amax(dim=-1)[0]
    assert changed[cat] > 1e-3
    assert torch.count_nonzero(changed) == 1  # compel leaves the tokens of weight 1 as the text encoder gave them
    weaker = prompt_embeddings(pipe, "a photo of the [cat]", None)["prompt_embeds"]
    assert not torch.allclose(weaker, plain)


def test_a_learned_token_inside_a_weighted_part_gets_its_weight(family_pipe):
    """compel's weighting, empty + (text - empty) * weight, lands on all 3 vectors of the learned token."""
    family, pipe = family_pipe
    weighted = prompt_embeddings(pipe, "a (<my-cat>:1.2) on the beach", None)["prompt_embeds"]
    plain = pipeline_encoding(pipe, "a <my-cat> on the beach", None)["prompt_embeds"]
    empty = pipeline_encoding(pipe, "", None)["prompt_embeds"]
    text = pipe.maybe_convert_prompt("a <my-cat> on the beach", pipe.tokenizer)  # `<my-cat> <my-cat>_1 <my-cat>_2`
    ids = torch.tensor(pipe.tokenizer(text, padding="max_length").input_ids)
    token_ids = pipe.tokenizer.convert_tokens_to_ids(["<my-cat>", "<my-cat>_1", "<my-cat>_2"])
    at_token = torch.isin(ids, torch.tensor(token_ids))
    assert int(at_token.sum()) == 3
    expected = plain.clone()
    expected[0, at_token] = empty[0, at_token] + (plain[0, at_token] - empty[0, at_token]) * 1.2
    torch.testing.assert_close(weighted, expected)


def test_long_weighted_prompts_go_on_in_further_chunks_and_the_negative_is_padded_to_match(tiny_sd1_path):
    pipe = load_pipeline(tiny_sd1_path)
    arguments = prompt_embeddings(pipe, "(a cat:1.2) " + "on the beach " * 30, "blurry")
    assert arguments["prompt_embeds"].shape == arguments["negative_prompt_embeds"].shape == (1, 2 * 77, 768)


def test_miniworld_and_its_own_tokenizer_work_with_weights():
    pipe = load_pipeline("miniworld")
    weighted = prompt_embeddings(pipe, "a (red:1.0) circle", None)
    plain = pipeline_encoding(pipe, "a red circle", None)
    for name, tensor in plain.items():
        torch.testing.assert_close(weighted[name], tensor, msg=name)
    length = pipe.tokenizer.model_max_length  # 32, not CLIP's 77
    assert prompt_embeddings(pipe, "a (red:1.4) circle", None)["prompt_embeds"].shape[1] == length


def image(config: GenerateConfig) -> np.ndarray:
    return np.asarray(Image.open(generate(config)[0]), dtype=np.int16)


def test_a_negative_embedding_changes_the_image(tiny_sd1_path, tmp_path):
    files = [write_embedding(Embedding("<bad>", {"text_encoder": torch.randn(2, 768, generator=torch.Generator().manual_seed(seed))}),
                             tmp_path / f"bad{seed}.safetensors") for seed in (1, 2)]

    def make(name, concept, negative_prompt):
        return image(GenerateConfig(model=tiny_sd1_path, concept=[str(concept)], prompt="a photo of the cat",
                                    negative_prompt=negative_prompt, num_images=1, steps=3, seed=4, device="cpu",
                                    output_dir=str(tmp_path / name)))

    without = make("none", files[0], None)
    with_first, with_second = make("first", files[0], "<bad>"), make("second", files[1], "<bad>")
    assert np.abs(with_first - without).max() > 0
    assert np.abs(with_first - with_second).max() > 0  # what the embedding holds matters, not just the word
    weighted = make("weighted", files[0], "(<bad>:1.4)")
    assert np.abs(weighted - with_first).max() > 0


def test_generate_with_weights_runs_and_records_the_prompts_as_written(tiny_sd1_path, tiny_sdxl_path, tmp_path):
    concept = write_embedding(Embedding("<my-cat>", {"text_encoder": torch.randn(2, 768)}), tmp_path / "c.safetensors")

    def config(name, prompt, model=tiny_sd1_path, concepts=(str(concept),), negative_prompt="(blurry:1.2), [dark]"):
        return GenerateConfig(model=model, concept=list(concepts), prompt=prompt, negative_prompt=negative_prompt,
                              num_images=1, steps=2, seed=1, device="cpu", output_dir=str(tmp_path / name))

    weighted = config("weighted", "a (<my-cat>:1.2) on the (beach:0.8)")
    parameters = Image.open(generate(weighted)[0]).text["parameters"].splitlines()
    assert parameters[:2] == ["a (<my-cat>:1.2) on the (beach:0.8)", "Negative prompt: (blurry:1.2), [dark]"]
    # Weight 1 goes through compel, plain text through the pipeline: the same picture.
    same = image(config("one", "a (<my-cat>:1.0) on the beach", negative_prompt="blurry"))
    plain = image(config("plain", "a <my-cat> on the beach", negative_prompt="blurry"))
    assert np.abs(same - plain).max() <= 1
    sdxl = generate(config("sdxl", "a (cat:1.3) on the beach", tiny_sdxl_path, ()))[0]
    assert Image.open(sdxl).text["parameters"].startswith("a (cat:1.3) on the beach\nNegative prompt: (blurry:1.2)")


def test_plain_prompts_do_not_go_through_compel(tiny_sd1_path, tmp_path, monkeypatch):
    """So images of plain prompts stay bit-identical to those made before weights existed."""
    import textual_inversion.generation as generation

    def refuse(*args, **kwargs):
        raise AssertionError("a plain prompt went through compel")

    monkeypatch.setattr(generation, "prompt_embeddings", refuse)
    paths = generate(GenerateConfig(model=tiny_sd1_path, prompt="a photo: the cat :)", negative_prompt="blurry",
                                    num_images=1, steps=1, device="cpu", output_dir=str(tmp_path / "out")))
    assert [path.name for path in paths] == ["000000.png"] and paths[0].is_file()
