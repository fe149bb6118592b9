"""benchmarks/stop_rule.py: where a rule stops each run, and what its checks cost up to there."""

from benchmarks.stop_rule import rule_row


def test_a_rule_stops_each_run_at_its_first_passes_in_a_row():
    runs = [("a", 0, {25: {"fidelity": 0.5, "c": 0.75}, 50: {"fidelity": 0.9, "c": 0.875}, 75: {"fidelity": 0.9, "c": 1.0}}),
            ("b", 1, {25: {"fidelity": 0.2, "c": 0.75}, 50: {"fidelity": 0.5, "c": 0.5}, 75: {"fidelity": 0.85, "c": 0.5}})]
    # Twice in a row at 0.75: run a stops at 50 (at the target); b never does, though step 75 reached it, so b ends
    # there, at the target too (ends at steps 50 and 75: 62 on average, rounded to even).
    # Checks run: a's 2 up to its stop, all 3 of b's: 5, at 2 s a check.
    assert rule_row(runs, "c", 0.75, 2, target=0.8, seconds_a_check=2.0) == (
        "| c | 0.75 | 2 | 1 of 2 | 1 | 0 | 1 | 2 | 62 | 10 | a/0: 50 (0.90); b/1: - |")
    # Once at 0.75: both stop at their first check, below the target: 2 checks.
    assert rule_row(runs, "c", 0.75, 1, target=0.8, seconds_a_check=2.0) == (
        "| c | 0.75 | 1 | 2 of 2 | 0 | 2 | 0 | 0 | 25 | 4 | a/0: 25 (0.50); b/1: 25 (0.20) |")


def test_runs_scored_only_where_a_rule_stops():
    """--evaluate-at-stops: steps no rule stops at carry no fidelity; a run no rule stops counts as missed when its
    last step, always scored, reached the target."""
    from benchmarks.stop_rule import first_stop

    runs = [("a", 0, {25: {"c": 0.5}, 50: {"c": 0.75}, 75: {"fidelity": 0.9, "c": 0.875}}),
            ("b", 1, {25: {"c": 0.5}, 50: {"c": 0.5}, 75: {"fidelity": 0.85, "c": 0.5}})]
    assert first_stop(runs[0][2], "c", 0.75, 2) == 75
    assert first_stop(runs[1][2], "c", 0.75, 1) is None
    assert rule_row(runs, "c", 0.75, 2, target=0.8, seconds_a_check=1.0) == (
        "| c | 0.75 | 2 | 1 of 2 | 1 | 0 | 1 | 2 | 75 | 6 | a/0: 75 (0.90); b/1: - |")


def test_runs_read_back_from_a_results_file():
    """--from-results: the per-run lines and the checks' seconds of a results file give back its runs (scores to 2
    decimals), so rules can be tabulated over the runs of several files."""
    from benchmarks.stop_rule import checks_line, run_line, runs_from_results

    runs = [("teal-heart", 0, {25: {"a": 0.5, "b-16": 0.8125}, 50: {"a": 0.875, "b-16": 1.0, "fidelity": 0.9375}}),
            ("red-star", 3, {25: {"a": 0.0, "b-16": 0.0625, "fidelity": 0.25}})]
    text = "\n".join(["# Stopping rules", "", "Seconds per check (median): a 1.13 s, b-16 2.03 s.", "",
                      *(run_line(c, seed, scores, ["a", "b-16"]) for c, seed, scores in runs), "",
                      checks_line(["a", "b-16"])])
    read, seconds = runs_from_results(text)
    assert seconds == {"a": 1.13, "b-16": 2.03}
    assert [(c, seed, sorted(scores)) for c, seed, scores in read] == [("teal-heart", 0, [25, 50]), ("red-star", 3, [25])]
    assert read[0][2][25] == {"a": 0.5, "b-16": 0.81}
    assert read[0][2][50] == {"a": 0.88, "b-16": 1.0, "fidelity": 0.94}
    assert read[1][2][25] == {"a": 0.0, "b-16": 0.06, "fidelity": 0.25}


def test_only_the_fresh_noise_check_moves_its_seeds_at_each_check():
    """requests-8-fresh draws new noise at every check (its seeds move on by its image count); every other check
    draws the same noise each time, so that checks differ only by the embedding."""
    from benchmarks.stop_rule import candidate_checks

    from textual_inversion.learned_check import LearnedCheck

    check = LearnedCheck(prompts=[f"a <t> {i}" for i in range(8)], shared={"colour": "teal"}, seed=1000, judge=None)
    candidates = candidate_checks(check, captions=[["a <t> on sand"], ["a <t> on grey"]])
    assert candidates["requests-8-fresh"].drawn_at(0).seed == 1000
    assert candidates["requests-8-fresh"].drawn_at(3).seed == 1000 + 3 * 8
    assert candidates["requests-8-fresh"].drawn_at(3).prompts == check.prompts
    assert all(candidate.drawn_at(3).seed == 1000 for name, candidate in candidates.items() if name != "requests-8-fresh")
    assert candidates["requests-16"].drawn_at(2).prompts == check.prompts * 2
