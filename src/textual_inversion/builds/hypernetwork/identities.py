"""miniworld identities for HyperDreamBooth: distinct shape/colour/pattern combinations, rendered a few times each.

Every identity is a "subject" the way a face is in the paper: its shape, colour and pattern are fixed,
background, size and position vary between its pictures. The list is shuffled once with a fixed seed
and the first `HELD_OUT` are kept for evaluation: they never enter the hypernetwork's training set.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path

from ...atomic import atomic_path
from ...miniworld.concepts import ConceptSpec
from ...miniworld.world import (
    BACKGROUNDS,
    BASE_SHAPES,
    NAMED_COLOURS,
    PATTERNS,
    SIZES,
    Scene,
    random_scene,
    render,
)

TOKEN = "sks"  # the paper's rare identifier; one fixed word for every identity
HELD_OUT = 6
TUNING = 16  # validation identities that tune the fast fine-tune (benchmarks/hyperdreambooth_tune.py)
SHUFFLE_SEED = 0


@dataclass(frozen=True)
class Identity:
    shape: str
    colour: str
    pattern: str
    index: int  # position in the shuffled list: also the seed of its renders

    @property
    def name(self) -> str:
        return f"{self.colour}-{self.pattern}-{self.shape}"

    def attributes(self) -> dict[str, str]:
        return {"shape": self.shape, "colour": self.colour, "pattern": self.pattern}

    def one_hot(self) -> list[float]:
        """Shape, colour and pattern as one-hot features, plus a constant 1 (for regressions on identities)."""
        return ([float(self.shape == s) for s in BASE_SHAPES] + [float(self.colour == c) for c in NAMED_COLOURS]
                + [float(self.pattern == p) for p in PATTERNS] + [1.0])

    def scenes(self, count: int) -> list[Scene]:
        """`count` scenes of this identity: backgrounds cycled, sizes alternated, positions random."""
        rng = random.Random(10_000 + self.index)
        return [random_scene(rng, shapes=(self.shape,), colours=(self.colour,), patterns=(self.pattern,),
                             backgrounds=(BACKGROUNDS[(self.index + i) % len(BACKGROUNDS)],),
                             sizes=(SIZES[i % len(SIZES)],)) for i in range(count)]

    def spec(self) -> ConceptSpec:
        """Ground truth for the judge: the three defining attributes; background and size free."""
        words = f"{self.colour} {self.pattern} {self.shape}"
        return ConceptSpec(token=TOKEN, init_word=self.shape, property="object", words=words,
                           attributes=self.attributes(), free=["background", "size"])


def all_identities() -> list[Identity]:
    """Every base shape x named colour x pattern (192), in a fixed shuffled order."""
    combos = list(itertools.product(BASE_SHAPES, NAMED_COLOURS, PATTERNS))
    random.Random(SHUFFLE_SEED).shuffle(combos)
    return [Identity(shape, colour, pattern, index) for index, (shape, colour, pattern) in enumerate(combos)]


def held_out() -> list[Identity]:
    """Evaluation identities, never in the training set."""
    return all_identities()[:HELD_OUT]


def training_identities(count: int) -> list[Identity]:
    """The first `count` identities after the held-out ones."""
    return all_identities()[HELD_OUT:HELD_OUT + count]


def validation_identities(count: int) -> list[Identity]:
    """The last `count` training identities, withheld from a hypernetwork trained with `--validation count`
    so that its settings (e.g. the fast fine-tune's) can be tuned without looking at the held-out set."""
    return all_identities()[-count:] if count > 0 else []


def extra_held_out(count: int) -> list[Identity]:
    """`count` more evaluation identities, just before the last TUNING ones (which tune the fast fine-tune):
    unseen by a hypernetwork trained with `--validation TUNING + count`, and never used to tune anything."""
    return all_identities()[-TUNING - count:-TUNING] if count > 0 else []


def write_images(identity: Identity, folder: Path, count: int) -> Path:
    """Render `count` PNGs of `identity` into `folder` (deterministic)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(identity.scenes(count)):
        with atomic_path(folder / f"{i:02d}.png") as temporary:  # a concurrent benchmark may be reading it
            render(scene).save(temporary, format="PNG")
    return folder
