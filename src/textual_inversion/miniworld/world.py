"""A tiny procedural world: one coloured, patterned shape on a plain background.

Everything is deterministic given a ``random.Random``; images are drawn at 4x
resolution with PIL and downsampled with a box filter, which antialiases edges.

Two values exist in the world but are deliberately kept out of base training in
different ways, so that textual inversion has something real to learn later:

* ``HIDDEN_COLOUR`` ("teal") appears in base training images, but its name is
  never written in a caption (the model can draw it, but has no word for it);
* ``HELD_OUT_SHAPE`` ("star") never appears in base training at all.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

from PIL import Image, ImageDraw

IMAGE_SIZE = 64
SUPERSAMPLE = 4

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "heart", "cross", "ring", "star")
HELD_OUT_SHAPE = "star"
BASE_SHAPES: tuple[str, ...] = tuple(s for s in SHAPES if s != HELD_OUT_SHAPE)

COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 135, 20),
    "yellow": (240, 215, 40),
    "green": (40, 165, 55),
    "blue": (50, 95, 235),
    "purple": (135, 55, 195),
    "pink": (245, 135, 195),
    "white": (245, 245, 245),
    "teal": (0, 170, 165),
}
COLOURS: tuple[str, ...] = tuple(COLOUR_RGB)
HIDDEN_COLOUR = "teal"
NAMED_COLOURS: tuple[str, ...] = tuple(c for c in COLOURS if c != HIDDEN_COLOUR)

BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "navy": (22, 32, 92),
    "sand": (225, 205, 160),
    "grey": (115, 115, 115),
}
BACKGROUNDS: tuple[str, ...] = tuple(BACKGROUND_RGB)

# Radius range in output pixels; "big" is roughly twice "small".
SIZE_RADIUS: dict[str, tuple[float, float]] = {"small": (9.0, 11.0), "big": (18.0, 21.0)}
SIZES: tuple[str, ...] = tuple(SIZE_RADIUS)

PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted", "checkered")
# Solid is the common default, so a caption without a pattern word leans solid.
PATTERN_WEIGHTS: tuple[float, ...] = (0.4, 0.2, 0.2, 0.2)
# The hidden colour is rarer, so "no colour word" does not mean "teal" too often.
HIDDEN_COLOUR_PROB = 0.06

ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "background", "size", "pattern")
VOCAB: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": COLOURS,
    "background": BACKGROUNDS,
    "size": SIZES,
    "pattern": PATTERNS,
}


@dataclass(frozen=True)
class Scene:
    """Attributes of one image. ``x``/``y`` are the shape centre in output pixels."""

    shape: str
    colour: str
    background: str
    size: str
    pattern: str
    x: float
    y: float
    radius: float

    def attributes(self) -> dict[str, str]:
        """The categorical attributes (what captions and the judge talk about)."""
        d = asdict(self)
        return {k: d[k] for k in ATTRIBUTES}


def random_scene(
    rng: random.Random,
    shapes: tuple[str, ...] = BASE_SHAPES,
    colours: tuple[str, ...] = COLOURS,
    backgrounds: tuple[str, ...] = BACKGROUNDS,
    sizes: tuple[str, ...] = SIZES,
    patterns: tuple[str, ...] = PATTERNS,
    hidden_colour_prob: float = HIDDEN_COLOUR_PROB,
) -> Scene:
    """Sample a scene. Defaults describe the base-training distribution (no star)."""
    shape = rng.choice(shapes)
    named = [c for c in colours if c != HIDDEN_COLOUR]
    if HIDDEN_COLOUR in colours and (not named or rng.random() < hidden_colour_prob):
        colour = HIDDEN_COLOUR
    else:
        colour = rng.choice(named)
    background = rng.choice(backgrounds)
    size = rng.choice(sizes)
    if tuple(patterns) == PATTERNS:
        pattern = rng.choices(PATTERNS, weights=PATTERN_WEIGHTS)[0]
    else:
        pattern = rng.choice(patterns)
    lo, hi = SIZE_RADIUS[size]
    radius = rng.uniform(lo, hi)
    margin = radius + 2.0
    x = rng.uniform(margin, IMAGE_SIZE - margin)
    y = rng.uniform(margin, IMAGE_SIZE - margin)
    return Scene(shape, colour, background, size, pattern, x, y, radius)


def _polygon(cx: float, cy: float, r: float, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Scale unit-space points (y down) around a centre."""
    return [(cx + r * px, cy + r * py) for px, py in points]


def _heart_points(n: int = 64) -> list[tuple[float, float]]:
    pts = []
    for i in range(n):
        t = 2 * math.pi * i / n
        px = 16 * math.sin(t) ** 3
        py = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((px / 17.0, -py / 17.0 + 0.05))
    return pts


def _star_points() -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        a = -math.pi / 2 + i * math.pi / 5
        rr = 1.0 if i % 2 == 0 else 0.42
        pts.append((rr * math.cos(a), rr * math.sin(a) + 0.08))
    return pts


_TRIANGLE = [(0.0, -1.0), (0.95, 0.72), (-0.95, 0.72)]
_CROSS_W = 0.34
_CROSS = [
    (-_CROSS_W, -1), (_CROSS_W, -1), (_CROSS_W, -_CROSS_W), (1, -_CROSS_W), (1, _CROSS_W), (_CROSS_W, _CROSS_W),
    (_CROSS_W, 1), (-_CROSS_W, 1), (-_CROSS_W, _CROSS_W), (-1, _CROSS_W), (-1, -_CROSS_W), (-_CROSS_W, -_CROSS_W),
]  # fmt: skip
_HEART = _heart_points()
_STAR = _star_points()


def shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> Image.Image:
    """A binary "L" mask of ``shape`` on a ``size``x``size`` canvas (coordinates in canvas pixels)."""
    mask = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(mask)
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        ri = 0.55 * r
        d.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=0)
    elif shape == "square":
        h = 0.85 * r
        d.rectangle([cx - h, cy - h, cx + h, cy + h], fill=255)
    elif shape == "triangle":
        d.polygon(_polygon(cx, cy, r, _TRIANGLE), fill=255)
    elif shape == "heart":
        d.polygon(_polygon(cx, cy, r, _HEART), fill=255)
    elif shape == "cross":
        d.polygon(_polygon(cx, cy, r, _CROSS), fill=255)
    elif shape == "star":
        d.polygon(_polygon(cx, cy, r, _STAR), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return mask


def pattern_mask(pattern: str, size: int, scale: int) -> Image.Image | None:
    """Where the darker second tone goes (255) for a pattern; None for solid.

    The pattern lives on a fixed image-space grid (period 8 output pixels) so it
    survives the 4x latent downsampling of the VAE.
    """
    if pattern == "solid":
        return None
    m = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(m)
    period = 8 * scale
    if pattern == "striped":  # diagonal stripes, half on / half off
        for off in range(-size, 2 * size, period):
            d.polygon(
                [(off, 0), (off + period // 2, 0), (off + period // 2 - size, size), (off - size, size)],
                fill=255,
            )
    elif pattern == "dotted":
        rad = 1.8 * scale
        for gy in range(period // 2, size, period):
            for gx in range(period // 2, size, period):
                d.ellipse([gx - rad, gy - rad, gx + rad, gy + rad], fill=255)
    elif pattern == "checkered":
        cell = period // 2
        for gy in range(0, size, cell):
            for gx in range(0, size, cell):
                if (gx // cell + gy // cell) % 2:
                    d.rectangle([gx, gy, gx + cell - 1, gy + cell - 1], fill=255)
    else:
        raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERNS}")
    return m


def _dark(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    # The second tone is a darker shade of the same colour, so colour stays readable.
    return tuple(int(c * 0.42) for c in rgb)  # type: ignore[return-value]


def render(scene: Scene, mask: Image.Image | None = None) -> Image.Image:
    """Draw ``scene`` as a 64x64 RGB image (antialiased by 4x supersampling).

    ``mask`` (an "L" image of 256x256, the supersampled canvas) replaces the scene's shape: the judge learns
    outlines that are no shape of this world from it.
    """
    s = SUPERSAMPLE
    big = IMAGE_SIZE * s
    img = Image.new("RGB", (big, big), BACKGROUND_RGB[scene.background])
    rgb = COLOUR_RGB[scene.colour]
    fill = Image.new("RGB", (big, big), rgb)
    pmask = pattern_mask(scene.pattern, big, s)
    if pmask is not None:
        fill.paste(_dark(rgb), mask=pmask)
    if mask is None:
        mask = shape_mask(scene.shape, scene.x * s, scene.y * s, scene.radius * s, big)
    img.paste(fill, mask=mask)
    return img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
