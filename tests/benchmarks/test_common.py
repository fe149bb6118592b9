"""The benchmarks' shared writer: a rerun replaces the table and keeps the notes added by hand."""

from benchmarks.common import KEPT_NOTES, print_and_write


def test_a_rerun_keeps_the_hand_notes_below_the_new_table(tmp_path):
    path = tmp_path / "speed.md"
    path.write_text("# Speed\n\n| a | 1.0 |\n\nNote (added by hand, 2026-12-01): the first run shared the machine\n"
                    "with a test run.\n\nLoad average: 2.0\n\nNote (added by hand, later): rerun alone.\n")

    print_and_write(["# Speed", "", "| a | 0.9 |"], path)

    text = path.read_text()
    assert text.startswith("# Speed\n\n| a | 0.9 |\n")
    assert "| a | 1.0 |" not in text and "Load average: 2.0" not in text
    notes = text.split(KEPT_NOTES)[1]
    assert notes.index("shared the machine\nwith a test run.") < notes.index("rerun alone.")

    print_and_write(["# Speed", "", "| a | 0.8 |"], path)  # kept once, not once per rerun
    assert path.read_text().count("rerun alone.") == 1 and path.read_text().count(KEPT_NOTES) == 1


def test_a_file_without_hand_notes_is_replaced_whole(tmp_path):
    path = tmp_path / "speed.md"
    path.write_text("# Speed\n\n| a | 1.0 |\n")

    print_and_write(["# Speed", "", "| a | 0.9 |"], path)

    assert path.read_text() == "# Speed\n\n| a | 0.9 |\n"


def test_benchmarks_keep_the_former_defaults_where_they_leave_options_out():
    """Their results files were made before the defaults of textual inversion, pivotal tuning and LoRA on miniworld
    changed."""
    from benchmarks.common import with_former_defaults

    from textual_inversion import TrainConfig

    config = TrainConfig.from_values(with_former_defaults({"images": "pics", "token": "<t>", "init_token": "dog",
                                                           "vectors": 6, "steps": 40}))
    assert (config.options.vectors, config.steps, config.learning_rate(), config.batch_size, config.ema_decay) == (
        6, 40, 5e-3, 1, 0.0)
    pivotal = TrainConfig.from_values(with_former_defaults({"method": "pivotal", "images": "pics", "token": "<t>",
                                                            "init_token": "dog", "lora_lr": 2e-3}))
    assert (pivotal.options.rank, pivotal.options.lora_lr, pivotal.options.ti_fraction, pivotal.options.vectors) == (
        4, 2e-3, 1.0, 1)
    lora = TrainConfig.from_values(with_former_defaults({"method": "lora", "images": "pics", "token": "sks",
                                                         "rank": 8}))
    assert (lora.options.rank, lora.options.lora_layers, lora.lr_scheduler, lora.learning_rate(), lora.batch_size,
            lora.steps) == (8, "attention", "constant", 1e-4, 1, 500)
    dreambooth = {"method": "dreambooth", "images": "pics", "token": "sks"}
    assert with_former_defaults(dreambooth) == dreambooth
