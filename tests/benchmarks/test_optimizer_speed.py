"""benchmarks/optimizer_speed.py: its settings make a valid TrainConfig for every method it times."""

from benchmarks.optimizer_speed import SETTINGS, run_config


def test_every_timed_method_is_a_valid_train_config(tmp_path):
    for method in SETTINGS:
        config = run_config(method, 10, tmp_path / method, batch_size=2, threads=1)
        config.validate()
        assert config.method == method
