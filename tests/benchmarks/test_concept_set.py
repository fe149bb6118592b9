"""benchmarks/concept_set.py: a results file names the weights its rows were measured on; the held-out concepts."""

import json
from pathlib import Path

import pytest
from benchmarks.common import weights_fingerprint
from benchmarks.concept_set import measured_on_packaged_model

from textual_inversion.miniworld import model_path


def test_a_new_results_file_names_the_packaged_weights_and_is_accepted_again(tmp_path):
    results = tmp_path / "sweep.jsonl"
    assert measured_on_packaged_model(results) == results
    first = json.loads(results.read_text().splitlines()[0])
    assert first == {"condition": "weights", "weights": weights_fingerprint(Path(model_path()))}
    with results.open("a") as handle:
        handle.write(json.dumps({"concept": "teal-circle", "condition": "ti-average"}) + "\n")
    measured_on_packaged_model(results)
    assert len(results.read_text().splitlines()) == 2


def test_rows_of_other_weights_or_of_unnamed_weights_are_refused(tmp_path):
    other = tmp_path / "former.jsonl"
    other.write_text(json.dumps({"condition": "weights", "weights": "0123456789abcdef"}) + "\n")
    with pytest.raises(SystemExit, match="former.jsonl: measured on miniworld weights 0123456789abcdef"):
        measured_on_packaged_model(other)
    unnamed = tmp_path / "old.jsonl"
    unnamed.write_text(json.dumps({"concept": "teal-circle", "condition": "ti-average"}) + "\n")
    with pytest.raises(SystemExit, match="old.jsonl: its first row does not name the weights"):
        measured_on_packaged_model(unnamed)
    assert len(unnamed.read_text().splitlines()) == 1


def test_the_committed_sweep_results_are_the_packaged_models():
    from benchmarks.concept_set import SWEEP_RESULTS

    measured_on_packaged_model(SWEEP_RESULTS)


def test_the_held_out_concepts_are_new_subjects_found_by_name(tmp_path):
    from benchmarks.concept_set import (
        CONCEPT_SET,
        HELD_OUT_CHECKERED,
        HELD_OUT_COLOURS,
        HELD_OUT_STARS,
        HELD_OUT_STRIPES,
        concept_kind,
        find_concept,
    )

    held_out = HELD_OUT_STRIPES + HELD_OUT_STARS + HELD_OUT_COLOURS + HELD_OUT_CHECKERED
    assert not {c.name for _, c in held_out} & {c.name for _, c in CONCEPT_SET}
    assert len({c.seed for _, c in held_out + CONCEPT_SET}) == len(held_out + CONCEPT_SET)  # scenes used nowhere else
    assert concept_kind("green-star") == "held-out star"
    folder, spec = find_concept("orange-striped-heart", tmp_path)
    assert spec.attributes == {"shape": "heart", "colour": "orange", "pattern": "striped"}
    assert len(list(folder.glob("*.png"))) == 5 and concept_kind("orange-striped-heart") == "held-out stripes"
    folder, spec = find_concept("teal-heart-held-out", tmp_path)
    assert spec.token == "<teal-heart-held-out>" and spec.attributes["colour"] == "teal"
    assert concept_kind("teal-heart-held-out") == "held-out hidden colour"
    folder, spec = find_concept("teal-checkered-square", tmp_path)
    assert spec.attributes == {"shape": "square", "colour": "teal", "pattern": "checkered"}
    assert concept_kind("teal-checkered-square") == "held-out checkered"
