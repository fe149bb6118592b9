"""Example concepts are reproducible and their images show their defining attributes."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from textual_inversion.miniworld.concepts import CONCEPTS, N_IMAGES, write_concepts
from textual_inversion.miniworld.judge import JUDGE_DIR, score

try:  # Python 3.11+
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "concepts"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("concepts")
    write_concepts(out)
    return out


@pytest.mark.parametrize("c", CONCEPTS, ids=lambda c: c.name)
def test_concept_files(fresh, c):
    d = fresh / c.name
    meta = tomllib.loads((d / "concept.toml").read_text())
    assert meta["token"] == c.token and meta["init_word"] == c.init_word
    assert meta["property"] in ("object", "style")
    assert meta["attributes"] == c.attributes and meta["words"] and meta["free"]
    assert len(meta["images"]) == N_IMAGES
    for img in meta["images"]:
        assert Image.open(d / img["file"]).size == (64, 64)
        for k, v in c.attributes.items():
            assert img[k] == v
        caption = (d / img["file"]).with_suffix(".txt").read_text().strip()
        # The caption names what varies (background, size, ...) and leaves the concept to the token.
        assert caption.count("{token}") == 1 and f"{img['background']} background" in caption
        assert img["size"] in caption.split()
        assert not any(v in caption.split() for v in c.attributes.values())


@pytest.mark.parametrize("c", CONCEPTS, ids=lambda c: c.name)
def test_committed_examples_match_generator(fresh, c):
    if not (EXAMPLES / c.name).exists():
        pytest.skip("examples not generated")
    assert (EXAMPLES / c.name / "concept.toml").read_text() == (fresh / c.name / "concept.toml").read_text()
    for i in range(N_IMAGES):
        a = np.asarray(Image.open(EXAMPLES / c.name / f"{i:02d}.png"))
        b = np.asarray(Image.open(fresh / c.name / f"{i:02d}.png"))
        assert (a == b).all()
        assert (EXAMPLES / c.name / f"{i:02d}.txt").read_text() == (fresh / c.name / f"{i:02d}.txt").read_text()


@pytest.mark.skipif(not (JUDGE_DIR / "judge.safetensors").exists(), reason="judge not trained")
@pytest.mark.parametrize("c", CONCEPTS, ids=lambda c: c.name)
def test_judge_sees_concept_attributes(fresh, c):
    images = [Image.open(fresh / c.name / f"{i:02d}.png") for i in range(N_IMAGES)]
    assert all(v == 1.0 for v in score(images, c.attributes).values())
