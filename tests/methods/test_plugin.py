"""A method is a plug-in: one class, its options dataclass and one `register` call, and the CLI, TOML files,
the web page's form, the shared loop and run.json all take it, with nothing else edited."""

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from textual_inversion.cli import build_parser, main, run
from textual_inversion.methods import METHODS, Method, MethodOptions, register
from textual_inversion.options import option
from textual_inversion.rundir import read_run_file

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
PREPARED = []  # what each run's prepare() was given


@dataclass
class OffsetOptions(MethodOptions):
    offset_start: float = option(0.0, "where the learned offset starts")


class OutputOffset(Method):
    """The smallest thing a method can learn: one number added to the UNet's prediction."""

    name = "output-offset"
    summary = "one number added to the UNet's prediction (a test plug-in)"
    options_class = OffsetOptions
    default_lr = 0.1
    default_steps = 3

    def prepare(self, pipe, data) -> None:
        PREPARED.append((len(data.images), len(data.captions), tuple(data.caches[0].means.shape)))
        self.offset = torch.nn.Parameter(torch.tensor(self.options.offset_start))
        self.hook = pipe.unet.conv_out.register_forward_hook(lambda module, inputs, output: output + self.offset)

    def parameter_groups(self, lr: float) -> list[dict]:
        return [{"params": [self.offset], "lr": lr}]

    def state_dict(self) -> dict:
        return {"offset": self.offset.detach().clone()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.offset.copy_(state["offset"])

    def save(self, folder: Path, metadata: dict[str, str]) -> dict[str, Path]:
        path = Path(folder) / "offset.safetensors"
        save_file({"offset": self.offset.detach().reshape(1)}, str(path), metadata=metadata)
        return {"offset": path}

    def release(self) -> None:
        self.hook.remove()


@pytest.fixture
def plugin():
    PREPARED.clear()
    register(OutputOffset)
    yield OutputOffset
    del METHODS[OutputOffset.name]


def train_args(tiny_sd1_path, image_folder, output_dir) -> list[str]:
    return ["train", "--model", tiny_sd1_path, "--images", str(image_folder), "--token", "<x>", "--device", "cpu",
            "--batch-size", "2", "--output-dir", str(output_dir)]


def test_a_registered_method_trains_from_the_command_line_and_a_toml_file(plugin, tiny_sd1_path, image_folder,
                                                                          tmp_path, capsys):
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    assert "--offset-start" in train.format_help() and "--method output-offset" in train.format_help()

    assert run(train_args(tiny_sd1_path, image_folder, tmp_path / "cli") + ["--method", "output-offset",
                                                                          "--offset-start", "0.5"]) == 0
    record = read_run_file(tmp_path / "cli")
    assert record["status"] == "finished" and record["outputs"] == {"offset": "offset.safetensors"}
    assert record["config"]["options"] == {"offset_start": 0.5} and record["trigger_word"] == "<x>"
    learned = load_file(tmp_path / "cli" / "offset.safetensors")["offset"].item()
    assert learned != 0.5  # it learned, from where its option said
    # the pictures, their captions and the cached latents (with flips; the 48x40 pictures train in the 36x28 bucket)
    assert PREPARED == [(4, 4, (8, 4, 14, 18))]
    assert f"learned {tmp_path / 'cli' / 'offset.safetensors'}" in capsys.readouterr().out

    (tmp_path / "run.toml").write_text('method = "output-offset"\noffset-start = 0.5\n')
    assert run(train_args(tiny_sd1_path, image_folder, tmp_path / "toml") + ["--config", str(tmp_path / "run.toml")]) == 0
    assert load_file(tmp_path / "toml" / "offset.safetensors")["offset"].item() == learned  # the same run

    with pytest.raises(SystemExit, match="2"):  # its option belongs to it alone
        main(train_args(tiny_sd1_path, image_folder, tmp_path / "ti") + ["--init-token", "cat", "--offset-start", "1"])
    assert "--offset-start is an option of output-offset, not of --method textual-inversion" in capsys.readouterr().err


def test_a_registered_method_gets_its_fields_on_the_web_page_and_trains_from_the_form(plugin, tiny_sd1_path,
                                                                                      image_folder, tmp_path):
    from textual_inversion.config import UIConfig
    from textual_inversion.ui.app import build_app
    from textual_inversion.ui.jobs import FINISHED, TrainingJobs
    from textual_inversion.ui.teach_tab import method_fields, submit_job

    assert method_fields()["output-offset"] == ["offset_start"]
    ui = UIConfig(model=tiny_sd1_path, runs_dir=str(tmp_path / "runs"), device="cpu")
    jobs = TrainingJobs()
    try:
        page = build_app(ui, jobs)
        ids = {block.elem_id for block in page.blocks.values()}
        assert {"train-offset_start", "teach-options-output-offset"} <= ids
        values = {"token": "<x>", "method": "output-offset", "offset_start": 0.25, "batch_size": 2,
                  "init_token": "", "vectors": 1, "rank": 4}  # the form sends every method's fields
        job = submit_job(ui, jobs, [str(path) for path in sorted(image_folder.iterdir())], values)
        deadline = time.monotonic() + 120
        while job.state != FINISHED and time.monotonic() < deadline:
            assert job.error is None, job.error
            time.sleep(0.1)
        assert job.config.options == OffsetOptions(offset_start=0.25) and job.result.steps == 3
        assert json.loads((job.output_dir / "run.json").read_text())["outputs"] == {"offset": "offset.safetensors"}
    finally:
        jobs.close(timeout=60)
