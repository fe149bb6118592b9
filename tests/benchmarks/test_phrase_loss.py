"""benchmarks/phrase_loss.py: the phrases that stand in for a concept's token."""

from types import SimpleNamespace

from benchmarks.phrase_loss import PATTERNED, phrases


def test_a_composite_is_compared_with_its_pattern_swapped_and_dropped():
    spec = SimpleNamespace(words="a blue striped square", init_word="square",
                           attributes={"shape": "square", "colour": "blue", "pattern": "striped"})
    assert phrases(spec) == ["blue striped square", "blue square", "blue dotted square", "blue checkered square",
                             "square"]


def test_a_style_has_no_solid_phrase():
    spec = SimpleNamespace(words="checkered", init_word="pattern", attributes={"pattern": "checkered"})
    assert phrases(spec) == ["checkered", "striped", "dotted", "pattern"]


def test_the_default_concepts_are_those_whose_words_name_a_pattern():
    assert "blue-striped-square" in PATTERNED and "checkered-style" in PATTERNED
    assert "teal-heart" not in PATTERNED and "red-star" not in PATTERNED
