"""The demo scores its baselines in a second process while the token trains, and gets what scoring them after gives."""

import dataclasses
import json
import multiprocessing

import pytest

from textual_inversion import demo
from textual_inversion.config import DemoConfig


@pytest.fixture
def fidelity_only_spec(tmp_path):
    """The demo's concept with its edit prompts left out (16 images per condition instead of 40)."""
    return dataclasses.replace(demo.write_concept_images(tmp_path / "images"), free=[])


@pytest.mark.slow  # the baselines twice, 64 miniworld images in all
def test_baselines_scored_beside_the_training_match_those_scored_after_it(tmp_path, fidelity_only_spec, monkeypatch):
    monkeypatch.setattr("textual_inversion.models.usable_cpus", lambda: 2)  # a core to spare, on any machine
    config = DemoConfig(output_dir=str(tmp_path), threads=1, device="cpu")
    with demo.baselines_beside_training(fidelity_only_spec, tmp_path / "beside", config) as baselines:
        assert len(multiprocessing.active_children()) == 1
        beside = baselines.result()
        assert baselines.threads_freed() == 1  # done: its thread is the evaluation's now
    assert not multiprocessing.active_children()
    after = demo.score_baselines(fidelity_only_spec, tmp_path / "after", 0, "cpu", 1)
    assert set(beside) == set(demo.BASELINES)
    assert json.dumps(beside, sort_keys=True) == json.dumps(after, sort_keys=True)  # editability: NaN in both
    assert sorted(p.name for p in (tmp_path / "beside" / "grids").iterdir()) == sorted(demo.BASELINES)


def test_a_failed_training_stops_the_baselines(tmp_path, fidelity_only_spec, monkeypatch):
    monkeypatch.setattr("textual_inversion.models.usable_cpus", lambda: 2)
    config = DemoConfig(output_dir=str(tmp_path), threads=1, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        with demo.baselines_beside_training(fidelity_only_spec, tmp_path / "beside", config):
            assert len(multiprocessing.active_children()) == 1
            raise KeyboardInterrupt
    assert not multiprocessing.active_children()


def test_without_a_core_to_spare_the_baselines_wait_for_the_training(tmp_path, fidelity_only_spec, monkeypatch):
    monkeypatch.setattr("textual_inversion.models.usable_cpus", lambda: 1)
    scored = []
    monkeypatch.setattr(demo, "score_baselines", lambda *args: scored.append(args) or {"init_word": "scored"})
    config = DemoConfig(output_dir=str(tmp_path), threads=1, device="cpu")
    with demo.baselines_beside_training(fidelity_only_spec, tmp_path, config) as baselines:
        assert not multiprocessing.active_children() and not scored
        assert baselines.threads_freed() == 0
        assert baselines.result() == {"init_word": "scored"}


def test_the_evaluation_takes_the_threads_of_the_finished_baselines_and_no_more(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("textual_inversion.models.usable_cpus", lambda: 4)
    pending = demo.PendingBaselines(result=dict, threads_freed=lambda: 0)
    finished = demo.PendingBaselines(result=dict, threads_freed=lambda: 2)
    assert demo.threads_after_training(DemoConfig(), pending) == 2  # still scoring: the training's half
    assert demo.threads_after_training(DemoConfig(), finished) == 4
    one_each = demo.PendingBaselines(result=dict, threads_freed=lambda: 1)
    assert demo.threads_after_training(DemoConfig(threads=1), one_each) == 2


def test_the_evaluation_takes_the_baselines_thread_when_their_process_finishes_during_it(tmp_path, fidelity_only_spec,
                                                                                         monkeypatch):
    import torch

    monkeypatch.setattr("textual_inversion.models.usable_cpus", lambda: 2)
    finished = []  # the baselines' process ends after the evaluation's first prompt
    baselines = demo.PendingBaselines(result=dict, threads_freed=lambda: 1 if finished else 0)
    threads_seen = []

    def score_condition(pipe, spec, condition, output_dir, on_prompt, **settings):
        for _ in range(3):
            threads_seen.append(torch.get_num_threads())
            on_prompt()
            finished.append(True)
        return {"fidelity": 1.0}, []

    monkeypatch.setattr("textual_inversion.evaluate.score_condition", score_condition)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        config = DemoConfig(output_dir=str(tmp_path), threads=1, device="cpu")
        assert demo.score_token(None, fidelity_only_spec, tmp_path, config, baselines)[0] == {"fidelity": 1.0}
    finally:
        torch.set_num_threads(before)
    assert threads_seen == [1, 1, 2]  # the first prompt's check still finds it running


def threads_at_each_step(on_step, steps: int, before_step=lambda step: None) -> list[int]:
    """The torch thread count after each of `steps` calls of `on_step`, starting from 1 thread (restored after)."""
    import torch

    seen = []
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for step in range(1, steps + 1):
            before_step(step)
            on_step(step, 0.1)
            seen.append(torch.get_num_threads())
    finally:
        torch.set_num_threads(before)
    return seen


def test_the_training_takes_the_baselines_thread_at_the_handoff_step_waiting_for_them(monkeypatch, caplog):
    monkeypatch.setattr("textual_inversion.models.usable_cpus", lambda: 2)
    monkeypatch.setattr(demo, "THREADS_HANDOFF_STEP", 3)
    waited = []  # the process is still scoring until the training waits for it
    baselines = demo.PendingBaselines(result=dict, threads_freed=lambda: 1 if waited else 0,
                                      wait=lambda: waited.append(True))
    with caplog.at_level("INFO", logger="textual_inversion.demo"):
        seen = threads_at_each_step(demo.hand_over_threads(DemoConfig(threads=1, device="cpu"), baselines), 5)
    assert seen == [1, 1, 2, 2, 2] and waited == [True]  # at step 3, not when the process ends
    assert "waited" in caplog.text and "2 threads" in caplog.text


def test_a_process_done_early_hands_its_thread_over_at_the_handoff_step_only(monkeypatch, caplog):
    monkeypatch.setattr("textual_inversion.models.usable_cpus", lambda: 2)
    monkeypatch.setattr(demo, "THREADS_HANDOFF_STEP", 4)
    steps_begun = []  # the process is done from the training's second step on
    baselines = demo.PendingBaselines(result=dict, threads_freed=lambda: 1 if len(steps_begun) >= 2 else 0,
                                      wait=lambda: None)
    with caplog.at_level("INFO", logger="textual_inversion.demo"):
        seen = threads_at_each_step(demo.hand_over_threads(DemoConfig(threads=1, device="cpu"), baselines), 5,
                                    before_step=steps_begun.append)
    assert seen == [1, 1, 1, 2, 2]  # the same steps at each thread count however early it ends
    assert "done by step 2" in caplog.text


def test_without_a_second_process_the_training_keeps_its_threads(monkeypatch):
    monkeypatch.setattr(demo, "THREADS_HANDOFF_STEP", 1)
    on_step = demo.hand_over_threads(DemoConfig(threads=1, device="cpu"),
                                     demo.PendingBaselines(result=dict, threads_freed=lambda: 0))
    assert threads_at_each_step(on_step, 2) == [1, 1]


def test_other_training_settings_reach_the_training_in_place_of_the_demos(tmp_path, monkeypatch):
    monkeypatch.setattr("textual_inversion.models.usable_cpus", lambda: 1)  # no second process
    trained = []

    def train(config, on_step=None):
        trained.append(config)
        raise InterruptedError  # the settings are what is tested; nothing trains

    monkeypatch.setattr("textual_inversion.training.train", train)
    config = DemoConfig(output_dir=str(tmp_path), steps=250, threads=1, device="cpu")
    for settings in (None, {**demo.DEMO_TRAINING, "lr": 0.2, "lr_scheduler": "cosine"}):
        with pytest.raises(InterruptedError):
            demo.run_demo(dataclasses.replace(config, overwrite=True), settings)
    shipped, other = trained
    assert (shipped.lr, shipped.lr_scheduler, shipped.ema_decay) == (0.1, "constant", 0.99)
    assert (other.lr, other.lr_scheduler) == (0.2, "cosine")
    assert shipped.steps == other.steps == 250 and other.options.vectors == demo.DEMO_TRAINING["vectors"]


def test_the_fast_demo_trains_pivotal_tuning_until_learned_and_steps_still_win(tmp_path, fidelity_only_spec):
    fast = demo.demo_train_config(DemoConfig(output_dir=str(tmp_path), fast=True), fidelity_only_spec)
    assert (fast.method, fast.steps, fast.stop_when_learned, fast.learned_passes) == ("pivotal", 300, True, 2)
    plain = demo.demo_train_config(DemoConfig(output_dir=str(tmp_path)), fidelity_only_spec)
    assert (plain.method, plain.steps, plain.stop_when_learned) == ("textual-inversion", 800, False)
    assert demo.demo_train_config(DemoConfig(output_dir=str(tmp_path), fast=True, steps=120),
                                  fidelity_only_spec).steps == 120
