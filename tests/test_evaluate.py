"""The miniworld evaluation: its prompt set, baselines and report (the judge's own tests are in miniworld/)."""

import pytest

from textual_inversion.errors import UserError
from textual_inversion.evaluate import ConceptSpec, fill, format_table, prompt_cases, stand_in

OBJECT = ConceptSpec("<teal-thing>", "circle", "object", "a teal circle", {"shape": "circle", "colour": "teal"},
                     ["background", "size", "position"])
STYLE = ConceptSpec("<dotted>", "pattern", "style", "dotted", {"pattern": "dotted"}, ["shape", "colour"])


def test_object_prompts_ask_for_the_concept_then_change_one_free_attribute():
    cases = prompt_cases(OBJECT)
    fidelity = [c for c in cases if c.kind == "fidelity"]
    edits = [c for c in cases if c.kind.startswith("edit:")]
    assert len(fidelity) == 4 and all(c.expected == OBJECT.attributes for c in fidelity)
    assert {c.kind for c in edits} == {"edit:background", "edit:size"}  # position is free but not judged
    navy = next(c for c in edits if "navy" in c.template)
    assert navy.expected == {"shape": "circle", "colour": "teal", "background": "navy"}
    assert fill(navy.template, stand_in(OBJECT, "concept")) == "a <teal-thing> on a navy background"
    assert fill(navy.template, stand_in(OBJECT, "words")) == "a teal circle on a navy background"
    assert fill("a {c}", stand_in(OBJECT, "init_word")) == "a circle"


def test_style_prompts_use_the_token_as_an_adjective():
    cases = prompt_cases(STYLE)
    heart = next(c for c in cases if c.kind == "edit:shape" and c.template.endswith("heart"))
    assert fill(heart.template, stand_in(STYLE, "concept")) == "a <dotted> heart"
    assert heart.expected == {"pattern": "dotted", "shape": "heart"}
    assert fill("a {c}", "orange thing") == "an orange thing"


def test_spec_errors_name_the_file(tmp_path):
    (tmp_path / "bad.toml").write_text('token = "<x>"\n')
    with pytest.raises(UserError, match="bad.toml: not a concept spec"):
        ConceptSpec.from_toml(tmp_path / "bad.toml")
    with pytest.raises(UserError, match="no such file"):
        ConceptSpec.from_toml(tmp_path / "none.toml")


def test_table_lists_concept_and_baselines():
    report = {"fidelity": 0.9, "editability": 0.75,
              "baselines": {"init_word": {"fidelity": 0.0, "editability": 0.0}, "words": {"fidelity": 0.1, "editability": 0.05}}}
    lines = format_table(report).splitlines()
    assert lines[1].split()[-2:] == ["0.90", "0.75"]
    assert lines[2].startswith("baseline: init word") and lines[3].startswith("baseline: words")
