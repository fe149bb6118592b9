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
