"""The renderer and caption grammar: determinism, vocabulary, and the two held-back values."""

import random
import re

import numpy as np

from textual_inversion.miniworld.captions import FILLER_WORDS, caption, full_caption
from textual_inversion.miniworld.world import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT_SHAPE,
    HIDDEN_COLOUR,
    PATTERNS,
    SHAPES,
    SIZES,
    VOCAB,
    random_scene,
    render,
)


def _images(seed: int, n: int = 8):
    rng = random.Random(seed)
    return [np.asarray(render(random_scene(rng, shapes=SHAPES))) for _ in range(n)]


def test_vocabulary_sizes():
    assert len(SHAPES) >= 7 and HELD_OUT_SHAPE in SHAPES
    assert len(COLOURS) == 9 and HIDDEN_COLOUR in COLOURS  # 8 named + the hidden one
    assert len(BACKGROUNDS) == 4 and len(SIZES) == 2 and len(PATTERNS) >= 3


def test_render_is_deterministic_per_seed():
    a, b, c = _images(1), _images(1), _images(2)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert any((x != y).any() for x, y in zip(a, c, strict=True))


def test_render_shape_and_mode():
    im = render(random_scene(random.Random(0)))
    assert im.size == (64, 64) and im.mode == "RGB"


def test_base_distribution_never_contains_held_out_shape():
    rng = random.Random(0)
    scenes = [random_scene(rng) for _ in range(2000)]
    assert all(s.shape != HELD_OUT_SHAPE for s in scenes)
    assert any(s.colour == HIDDEN_COLOUR for s in scenes)  # drawn, just never named


def test_captions_use_vocab_and_never_name_hidden_colour():
    rng = random.Random(0)
    allowed = {w for vs in VOCAB.values() for w in vs} | set(FILLER_WORDS)
    for _ in range(3000):
        s = random_scene(rng)
        text = caption(s, rng)
        words = re.findall(r"[a-z]+", text)
        assert HIDDEN_COLOUR not in words, text
        assert set(words) <= allowed, text
        if s.colour == HIDDEN_COLOUR:
            assert not set(words) & set(COLOURS), text


def test_full_caption():
    s = random_scene(random.Random(3))
    text = full_caption(s)
    for v in s.attributes().values():
        assert v in text
