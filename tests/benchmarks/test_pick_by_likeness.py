"""benchmarks/pick_by_likeness.py: the judge's reading of a sweep run, and what the picks count up to."""

import json

from benchmarks.pick_by_likeness import judged, tally


def test_judged_reads_the_evaluation_of_the_runs_own_budget(tmp_path):
    run = tmp_path / "ti-average-12800-seed2"
    (run / "evaluation-12800").mkdir(parents=True)
    (run / "evaluation-12800" / "evaluation.json").write_text(json.dumps({"fidelity": 0.5, "editability": 0.25,
                                                                          "prompts": []}))
    assert judged(run) == {"fidelity": 0.5, "editability": 0.25}


def test_tally_counts_the_pick_each_run_and_the_pairs_that_split():
    def row(distance, fidelity, editability):
        return {"distance": distance, "fidelity": fidelity, "editability": editability}

    pairs = [{"long": row(0.2, 0.5, 0.5), "bias": row(0.1, 0.9, 0.9)},  # split, picked right
             {"long": row(0.1, 0.5, 0.5), "bias": row(0.2, 0.9, 0.9)},  # split, picked wrong
             {"long": row(0.1, 0.9, 0.8), "bias": row(0.2, 0.9, 0.8)},  # both at the targets
             {"long": row(0.1, 0.7, 0.9), "bias": row(0.2, 0.9, 0.6)},  # neither
             {"long": row(0.11, 0.5, 0.5), "bias": row(0.1, 0.5, 0.9)},  # neither, close
             {"long": row(0.1, 0.9, 0.9), "bias": row(0.11, 0.5, 0.9)},  # split, close, picked right
             {"long": row(0.11, 0.9, 0.9), "bias": row(0.1, 0.5, 0.9)}]  # split, close, picked wrong
    assert tally(pairs) == {"pairs": 7, "pick": 3, "either": 5, "split": 4, "split_right": 2, "long": 3, "bias": 3,
                            "close": 3, "close_wrong": 1, "wide_wrong": 1}


def test_sweep_pairs_takes_each_pair_from_the_first_workdir_holding_both_runs(tmp_path, capsys):
    from argparse import Namespace

    from benchmarks.pick_by_likeness import sweep_pairs

    first, second = tmp_path / "seeds01", tmp_path / "seeds23"
    for folder in (first / "cross" / "long-seed0", first / "cross" / "bias-seed0", second / "cross" / "long-seed2",
                   second / "cross" / "bias-seed2", second / "cross" / "long-seed0", second / "cross" / "bias-seed0",
                   first / "cross" / "long-seed1"):  # seed 1: one run only
        folder.mkdir(parents=True)
    args = Namespace(concepts=["cross"], seeds=[0, 1, 2], workdir=[first, second], candidates=["long", "bias"])
    found = list(sweep_pairs(args))
    assert [(concept, seed, runs["bias"].parent.parent) for concept, seed, runs in found] == [("cross", 0, first),
                                                                                             ("cross", 2, second)]
    assert "skipped cross seed 1" in capsys.readouterr().out
