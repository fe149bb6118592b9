"""The tiny transformer-era pipelines of `tiny.py` (Flux, SD3, Z-Image): they build, load back, generate
deterministically, and their tokenizers and text encoders take a new token as textual inversion needs."""

from __future__ import annotations

import pytest
import torch

from textual_inversion.errors import UserError
from textual_inversion.tiny import (
    ENCODER_WIDTHS,
    LATENT_CHANNELS,
    VAE_FACTORS,
    WORDS,
    build_tiny_pipeline,
)

FAMILY_CLASSES = {"flux": "FluxPipeline", "sd3": "StableDiffusion3Pipeline", "z-image": "ZImagePipeline"}
PAIRS = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"), ("tokenizer_3", "text_encoder_3"))


@pytest.fixture(scope="module", params=list(FAMILY_CLASSES))
def built(request, tmp_path_factory):
    """(family, folder, the pipeline build_tiny_pipeline returned), built once per family."""
    family = request.param
    folder = tmp_path_factory.mktemp(f"tiny-{family}")
    return family, folder, build_tiny_pipeline(family, folder)


def load(folder):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tokenizer_encoder_pairs(pipe):
    """(component name, tokenizer, text encoder) for each text encoder the pipeline has."""
    return [(name, getattr(pipe, name), getattr(pipe, encoder)) for name, encoder in PAIRS
            if getattr(pipe, encoder, None) is not None]


def encode(pipe, family: str, prompt: str) -> torch.Tensor:
    """Everything the pipeline's encode_prompt hands the transformer for `prompt`, flattened into one vector."""
    if family == "flux":
        embeds, pooled, _ = pipe.encode_prompt(prompt, prompt_2=None, device="cpu", max_sequence_length=32)
        return torch.cat([embeds.flatten(), pooled.flatten()])
    if family == "sd3":
        embeds, _, pooled, _ = pipe.encode_prompt(prompt, None, None, device="cpu", do_classifier_free_guidance=False,
                                                  max_sequence_length=32)
        return torch.cat([embeds.flatten(), pooled.flatten()])
    embeds, _ = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)
    return embeds[0].flatten()


def generate(pipe, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return pipe("a photo of the cat", height=32, width=32, num_inference_steps=2, generator=generator,
                output_type="np").images


def test_loads_back_with_the_real_layout(built):
    family, folder, pipe = built
    loaded = load(folder)
    assert type(loaded) is type(pipe) and type(loaded).__name__ == FAMILY_CLASSES[family]
    widths = {name.replace("tokenizer", "text_encoder"): encoder.get_input_embeddings().weight.shape[1]
              for name, _, encoder in tokenizer_encoder_pairs(loaded)}
    assert widths == ENCODER_WIDTHS[family]
    assert loaded.vae.config.latent_channels == LATENT_CHANNELS
    assert (loaded.vae.config.shift_factor, loaded.vae.config.scaling_factor) == VAE_FACTORS[family]
    assert loaded.vae_scale_factor == 2
    assert type(loaded.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert loaded.scheduler.config.shift == 3.0
    assert loaded.scheduler.config.use_dynamic_shifting == (family == "flux")


def test_generation_is_deterministic(built):
    _, folder, _ = built
    pipe = load(folder)
    first, again, other = generate(pipe, 0), generate(pipe, 0), generate(pipe, 1)
    assert first.shape == (1, 32, 32, 3)
    assert (first == again).all()
    assert not (first == other).all()


def test_tokenizers_keep_words_whole_and_take_any_text(built):
    family, folder, _ = built
    for name, tokenizer, _ in tokenizer_encoder_pairs(load(folder)):
        for word in WORDS:
            assert len(tokenizer.tokenize(word)) == 1, (name, word)
            assert len(tokenizer.tokenize(f"the {word}")) == 2, (name, word)  # after a space too
        for text in ("a <new-token> xyz", "zebra!? 42 {x}"):
            ids = tokenizer(text, add_special_tokens=False).input_ids
            assert ids and tokenizer.unk_token_id not in ids, (name, text)
            if not type(tokenizer).__name__.startswith("CLIP"):  # CLIP's decode spaces out word ends
                assert tokenizer.decode(ids) == text, (name, text)
        assert tokenizer.tokenize("café ☕")  # non-ASCII: bytes for CLIP and Qwen, <unk> for T5 (as the real one)


@pytest.mark.parametrize("built", ["z-image"], indirect=True)
def test_qwen_chat_template_is_qwen3s(built):
    _, folder, _ = built
    tokenizer = load(folder).tokenizer
    messages = [{"role": "user", "content": "a cat"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert text == "<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>") and tokenizer.eos_token_id in ids
    assert tokenizer.pad_token == "<|endoftext|>"


def test_new_token_reaches_every_encoder(built):
    family, folder, _ = built
    pipe = load(folder)
    pairs = tokenizer_encoder_pairs(pipe)
    for _, tokenizer, encoder in pairs:
        assert tokenizer.add_tokens(["<t>"]) == 1
        encoder.resize_token_embeddings(len(tokenizer))
        assert "<t>" in tokenizer.tokenize("a <t> cat")
        assert encoder.get_input_embeddings().weight.shape[0] == len(tokenizer)
    with torch.no_grad():
        before = encode(pipe, family, "a <t> cat")
        for name, tokenizer, encoder in pairs:
            # Textual inversion trains exactly this row, so the prompt features must depend on it.
            encoder.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids("<t>")] += 1.0
            after = encode(pipe, family, "a <t> cat")
            assert after.shape == before.shape and torch.isfinite(after).all()
            assert not torch.equal(after, before), name
            before = after


def test_unknown_family_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown tiny pipeline family 'sd4'"):
        build_tiny_pipeline("sd4", tmp_path)
