"""benchmarks/concept_sweep.py: issue 20's goals read from the sweep's rows; its methods' settings."""

import shlex

from benchmarks.concept_set import find_concept
from benchmarks.concept_sweep import METHODS, goals, run_folder, sweep_values, train_options

from textual_inversion import TrainConfig
from textual_inversion.cli import build_parser, config_from_args
from textual_inversion.evaluate import stand_in


def run(concept: str, method: str, seed: int, passes: int, fidelity: float, editability: float = 0.9) -> dict:
    return {"concept": concept, "kind": "hidden colour", "condition": method, "seed": seed, "passes": passes,
            "fidelity": fidelity, "editability": editability}


def ceiling(concept: str, peak: float, start: str | None = None) -> dict:
    """A conditioning ceiling row: from the init word, or (`start`) from the concept's plain words."""
    row = {"concept": concept, "kind": "hidden colour", "condition": "ceiling", "seed": 0, "fidelity": peak,
           "peak": peak}
    return row if start is None else {**row, "start": start}


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
                         "ceiling reaches 0.8 at its best check from either start, a textual-inversion setting at the targets on every "
                         "seed: 1. Each textual-inversion setting run on all 2 of those on every seed, with how many "
                         "of them it met: ti-average 3200 1.")


def test_a_concept_the_ceiling_draws_only_from_its_words_counts_as_drawable():
    rows = [ceiling("a", 0.5), ceiling("a", 0.9, start="a blue striped square"),
            run("a", "ti-average", 0, 3200, 0.5), run("a", "ti-average", 1, 3200, 0.9)]
    lines = goals(rows, [0, 1])
    assert lines[2] == "| hidden colour | a | init word: 0.50; plain words: 0.90 | 1 of 2 | none | none |"
    assert "Of the 1 whose conditioning ceiling reaches 0.8 at its best check from either start, a " \
           "textual-inversion setting at the targets on every seed: 0." in lines[-1]


def test_every_method_setting_is_a_valid_train_config(tmp_path):
    # The values the sweep trains with, built as strictly as it builds them: a misspelt option in METHODS fails here.
    # 1600 steps: ti-average-noisiest-800 biases its first 800, so it is run at 6400 passes (1600 steps) only.
    folder, spec = find_concept("teal-heart", tmp_path)
    for name, setting in METHODS.items():
        values = sweep_values(name, spec, folder, tmp_path / name, seed=0, steps=1600, threads=1)
        values.pop("spread_words", None)  # the sweep turns it into an --init-embedding file, written from the pipeline
        config = TrainConfig.from_values(values, source=name)
        config.validate()
        assert config.method == setting.get("method", "textual-inversion"), name


def test_the_report_lists_each_method_as_the_train_options_it_ran_with(tmp_path):
    # The report's options table, given to `train` with the concept's own words, is the run's TrainConfig.
    folder, spec = find_concept("teal-heart", tmp_path)
    for name in METHODS:
        values = sweep_values(name, spec, folder, tmp_path / name, seed=0, steps=1600, threads=1)
        if values.pop("spread_words", False):
            continue  # its --init-embedding file is written from the pipeline, so the listing names it in words
        options = [option.replace("<init word>", spec.init_word).replace("<plain words>", stand_in(spec, "words"))
                   for option in shlex.split(train_options(name))]
        args = build_parser().parse_args([
            "train", "--images", str(folder), "--token", spec.token, "--property", spec.property, "--steps", "1600",
            "--checkpoint-every", "0", "--overwrite", "--output-dir", str(tmp_path / name), "--model", "miniworld",
            "--seed", "0", "--threads", "1", *options])
        assert config_from_args(args, TrainConfig) == TrainConfig.from_values(values, source=name), name


def test_runs_at_two_budgets_keep_folders_of_their_own(tmp_path):
    first, second = (run_folder(tmp_path, "teal-heart", "ti-average", 0, passes) for passes in (3200, 6400))
    assert first != second and first.parent == second.parent == tmp_path / "teal-heart"
    assert run_folder(tmp_path, "teal-heart", "textual-inversion", 1, 3200).name == "ti-3200-seed1"
