"""The miniworld tokenizer: any text tokenizes and round-trips; world words are single tokens."""

import pytest
from transformers import CLIPTokenizer

from textual_inversion.miniworld.tokenizer import save_tokenizer, world_words
from textual_inversion.miniworld.world import HELD_OUT_SHAPE, HIDDEN_COLOUR


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(str(save_tokenizer(tmp_path_factory.mktemp("tok"))))


@pytest.mark.parametrize(
    "text",
    [
        "a big red striped heart on a navy background",
        "Zürich, naïve café — ¿qué? 東京 🌟🙂 <my-toy> 123",
        "tabs\tand\nnewlines & $ymbols ~!@#%^*()",
    ],
)
def test_round_trip(tokenizer, text):
    ids = tokenizer(text).input_ids
    assert tokenizer.unk_token_id not in ids[1:-1]
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    # CLIP lowercases, and decoding puts a space after every word piece.
    assert decoded.replace(" ", "") == "".join(text.lower().split())


def test_world_words_are_single_tokens(tokenizer):
    for w in world_words():
        assert len(tokenizer.tokenize(w)) == 1, w


def test_unnamed_values_have_no_token(tokenizer):
    assert len(tokenizer.tokenize(HIDDEN_COLOUR)) > 1
    assert len(tokenizer.tokenize(HELD_OUT_SHAPE)) > 1


def test_special_tokens_and_length(tokenizer):
    assert tokenizer.bos_token == "<|startoftext|>" and tokenizer.eos_token == "<|endoftext|>"
    ids = tokenizer("a heart", padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert len(ids) == tokenizer.model_max_length == 32


def test_new_tokens_can_be_added(tokenizer):
    n = len(tokenizer)
    tokenizer.add_tokens(["<teal-thing>"])
    assert len(tokenizer) == n + 1
    assert tokenizer.tokenize("a <teal-thing> on navy")[1] == "<teal-thing>"
