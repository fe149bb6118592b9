"""benchmarks/methods.py: every method's settings make a valid TrainConfig, built as strictly as the benchmark
builds it (a misspelt option in METHODS fails here)."""

from benchmarks.common import bundled_concept
from benchmarks.methods import CONCEPTS, METHODS, method_values

from textual_inversion import TrainConfig


def test_every_method_on_every_concept_is_a_valid_train_config(tmp_path):
    for method in METHODS:
        for concept in CONCEPTS:
            config = TrainConfig.from_values(method_values(method, concept, 800, tmp_path, "miniworld", "cpu"),
                                             source=f"{method} on {concept}")
            config.validate()
            assert config.method == method
            if method == "textual-inversion":
                assert config.options.init_token == bundled_concept(concept)[1].init_word
