"""benchmarks/concept_sweep.py: issue 20's goals read from the sweep's rows; its methods' settings."""

import dataclasses

from benchmarks.common import with_former_defaults
from benchmarks.concept_set import find_concept
from benchmarks.concept_sweep import METHODS, goals
from benchmarks.methods import run_settings

from textual_inversion import TrainConfig
from textual_inversion.methods import get_method


def run(concept: str, method: str, seed: int, passes: int, fidelity: float, editability: float = 0.9) -> dict:
    return {"concept": concept, "kind": "hidden colour", "condition": method, "seed": seed, "passes": passes,
            "fidelity": fidelity, "editability": editability}


def ceiling(concept: str, peak: float) -> dict:
    return {"concept": concept, "kind": "hidden colour", "condition": "ceiling", "seed": 0, "fidelity": peak,
            "peak": peak}


def test_a_setting_meets_a_concept_only_on_every_seed_at_one_budget():
    rows = [ceiling("a", 0.9), ceiling("b", 0.9), ceiling("c", 0.5),
            # a: textual inversion on both seeds at 3200; LoRA on seed 0 only
            run("a", "ti-average", 0, 3200, 0.9), run("a", "ti-average", 1, 3200, 0.85),
            run("a", "lora-all-cosine", 0, 12800, 1.0),
            # b: textual inversion at the targets on seed 0 at 2000 and seed 1 at 3200 (no one budget), LoRA on both
            run("b", "ti-average", 0, 2000, 0.9), run("b", "ti-average", 1, 2000, 0.5),
            run("b", "ti-average", 0, 3200, 0.9, editability=0.6), run("b", "ti-average", 1, 3200, 0.9),
            run("b", "lora-all-cosine", 0, 12800, 0.9), run("b", "lora-all-cosine", 1, 12800, 0.9),
            # c: the ceiling does not draw it; textual inversion on seed 0 only
            run("c", "ti-average", 0, 3200, 0.9)]
    lines = goals(rows, [0, 1])
    assert lines[2] == "| hidden colour | a | 0.90 | 3 of 3 | ti-average 3200 | ti-average 3200 |"
    assert lines[3] == "| hidden colour | b | 0.90 | 4 of 6 | lora-all-cosine 12800 | none |"
    assert lines[4] == "| hidden colour | c | 0.50 | 1 of 1 | none | none |"
    assert lines[-1] == ("Some setting at the targets on every seed: 2 of 3 concepts. Of the 2 whose conditioning "
                         "ceiling reaches 0.8 at its best check, a textual-inversion setting at the targets on every "
                         "seed: 1. Each textual-inversion setting run on all 2 of those on every seed, with how many "
                         "of them it met: ti-average 3200 1.")


def test_every_method_setting_is_a_valid_train_config(tmp_path):
    # The sweep builds its TrainConfig leniently (it passes --init-token to every method, LoRA and DreamBooth too),
    # so a misspelt option in METHODS would be dropped without a word and the run measure the method's defaults.
    folder, spec = find_concept("teal-heart", tmp_path)
    for name, setting in METHODS.items():
        settings, _ = run_settings(setting, spec)
        settings.pop("spread_words", None)  # the sweep's own: it writes an --init-embedding file instead
        method = settings.get("method", "textual-inversion")
        if "init_token" in {f.name for f in dataclasses.fields(get_method(method).options_class)}:
            settings["init_token"] = settings.get("init_token", "{init}").format(init=spec.init_word,
                                                                                 words="teal heart")
        config = TrainConfig.from_values(with_former_defaults(dict(images=str(folder), token=spec.token, steps=800,
                                                                   **settings)), source=name)
        config.validate()
        assert config.method == method, name
