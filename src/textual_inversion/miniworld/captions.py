"""Caption grammar for the miniworld.

Captions vary in prefix, word order and completeness so the model learns both
the words and sensible defaults for omitted attributes. The hidden colour's name
is never written: captions of hidden-colour scenes simply omit the colour.
"""

from __future__ import annotations

import random

from .world import HIDDEN_COLOUR, Scene

PREFIXES: tuple[str, ...] = (
    "",
    "",
    "",
    "a photo of ",
    "a picture of ",
    "an image of ",
    "a rendering of ",
    "a drawing of ",
    "a close-up photo of ",
    "a good photo of ",
)
# Nouns used when the shape word is dropped.
GENERIC_NOUNS: tuple[str, ...] = ("shape", "thing", "object", "toy")
# Words that appear in captions or in common prompt templates; the tokenizer keeps them whole.
FILLER_WORDS: tuple[str, ...] = (
    "a", "an", "the", "of", "on", "in", "with", "and", "my", "one", "style", "pattern", "background",
    "photo", "picture", "image", "rendering", "rendition", "drawing", "painting", "close", "up",
    "good", "nice", "cool", "clean", "dirty", "dark", "bright", "small", "large", "little", "weird",
    "cropped", "shape", "thing", "object", "toy", "art", "colour", "color",
)  # fmt: skip

DROP_PROB = {"colour": 0.15, "size": 0.2, "pattern": 0.2, "background": 0.2, "shape": 0.08}
SOLID_WORD_PROB = 0.5


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(scene: Scene, rng: random.Random) -> str:
    """A random caption for ``scene`` (never naming the hidden colour)."""
    keep = {k: rng.random() >= p for k, p in DROP_PROB.items()}
    colour = scene.colour if keep["colour"] and scene.colour != HIDDEN_COLOUR else None
    size = scene.size if keep["size"] else None
    pattern = scene.pattern if keep["pattern"] else None
    if pattern == "solid" and rng.random() >= SOLID_WORD_PROB:
        pattern = None
    background = scene.background if keep["background"] else None
    noun = scene.shape if keep["shape"] else rng.choice(GENERIC_NOUNS)

    form = rng.randrange(5)
    adjectives = [w for w in (size, colour) if w]
    if form == 3 and pattern:  # "a red heart with a striped pattern"
        core = " ".join(adjectives + [noun]) + f" with {_article(pattern)} {pattern} pattern"
    else:
        core = " ".join(adjectives + ([pattern] if pattern else []) + [noun])
    if form == 4:  # comma list: "heart, red, big, striped, navy background"
        parts = [noun] + [w for w in (colour, size, pattern) if w]
        return ", ".join(parts) + (f", {background} background" if background else "")
    phrase = f"{_article(core)} {core}"
    if background:
        if form == 1:
            return f"{rng.choice(PREFIXES)}{_article(background)} {background} background with {phrase}"
        bg_text = rng.choice((f" on {_article(background)} {background} background", f" on {background}"))
        phrase += bg_text
    return rng.choice(PREFIXES) + phrase


def full_caption(scene: Scene) -> str:
    """The canonical complete caption, e.g. "a big red striped heart on a navy background".

    The hidden colour is named here only for humans/ground truth; never used for training.
    """
    words = [scene.size, scene.colour, scene.pattern, scene.shape]
    core = " ".join(words)
    return f"{_article(core)} {core} on {_article(scene.background)} {scene.background} background"


def concept_caption(scene: Scene, defining: set[str]) -> str:
    """A training caption for a concept image: what the image shows besides the concept, in the world's grammar.

    The concept's defining attributes give way to one ``{token}`` placeholder (filled in by the
    training data loader) where the first of them stood: "a big {token} on a black background" for
    an object, "a small red {token} heart on a navy background" for a pattern style. Naming what
    the concept is not is what caption files do for kohya's trainers too: the token then has no
    reason to absorb the background or the size, and the prompts speak the language the model learned.
    """
    words: list[str] = []
    for attribute in ("size", "colour", "pattern", "shape"):
        if attribute not in defining:
            words.append(getattr(scene, attribute))
        elif "{token}" not in words:
            words.append("{token}")
    return f"a {' '.join(words)} on {_article(scene.background)} {scene.background} background"

