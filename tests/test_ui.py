"""The web page's server side on the tiny model: the training queue, the tabs' functions, the `ui` command."""

import dataclasses
import json
import os
import socket
import sys
import threading
import time

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from textual_inversion import UserError  # noqa: E402
from textual_inversion.cli import main  # noqa: E402
from textual_inversion.ui import jobs as job_module  # noqa: E402
from textual_inversion.ui.jobs import CANCELLED, FINISHED, RUNNING, STOPPED, TrainingJobs  # noqa: E402

gradio = pytest.importorskip("gradio", reason="the page's tabs need gradio (pip install -e '.[dev]')")


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


@pytest.fixture
def jobs():
    manager = TrainingJobs()
    yield manager
    manager.close(timeout=60)


@pytest.fixture
def gated_train(monkeypatch):
    """The real `train`, held at its start until `gate` opens, recording when each run starts and ends."""
    gate, events = threading.Event(), []
    real_train = job_module.train

    def train(config, **hooks):
        events.append(("start", config.token))
        assert gate.wait(60)
        result = real_train(config, **hooks)
        events.append(("end", config.token))
        return result

    monkeypatch.setattr(job_module, "train", train)
    return gate, events


def run_config(train_config, tmp_path, token: str, **changes):
    """A short run of `train_config` under tmp_path/runs/, named after its token."""
    changes = {"output_dir": str(tmp_path / "runs" / token.strip("<>")), "device": "cpu", "steps": 2, **changes}
    return dataclasses.replace(train_config, token=token, **changes)


def test_one_job_at_a_time_in_order_of_arrival(jobs, gated_train, train_config, tmp_path):
    gate, events = gated_train
    first = jobs.submit(run_config(train_config, tmp_path, "<first>"))
    wait_for(lambda: first.state == RUNNING)
    second = jobs.submit(run_config(train_config, tmp_path, "<second>"))
    third = jobs.submit(run_config(train_config, tmp_path, "<third>"))
    assert (jobs.position(second), jobs.position(third)) == (1, 2)
    assert jobs.latest() is first  # what a page opened now shows

    from textual_inversion.ui.teach_tab import describe

    assert "queued (position 2), behind job 1" in describe(third, jobs)
    with pytest.raises(UserError, match="job 2 \\(queued\\) writes there"):
        jobs.submit(run_config(train_config, tmp_path, "<second>"))
    jobs.stop(third)  # still queued: dropped without running
    assert third.state == CANCELLED and jobs.position(third) is None

    gate.set()
    wait_for(lambda: second.state == FINISHED)
    assert events == [("start", "<first>"), ("end", "<first>"), ("start", "<second>"), ("end", "<second>")]
    assert first.state == FINISHED and (first.output_dir / "learned_embeds.safetensors").is_file()
    assert not third.output_dir.exists()


def test_stop_saves_a_checkpoint_a_new_page_reattaches_and_resume_finishes(jobs, train_config, tmp_path):
    from textual_inversion.ui.teach_tab import job_panel

    job = jobs.submit(run_config(train_config, tmp_path, "<long>", steps=20))
    wait_for(lambda: job.step >= 2)
    shown_id, status, progress, *_ = job_panel(jobs, None, None)  # a page just opened knows no job
    assert shown_id == job.id and "running · step" in status and "<progress" in progress

    jobs.stop(job)
    wait_for(lambda: job.state == STOPPED)
    stopped_at = job.result.steps
    assert 2 <= stopped_at < 20
    assert (job.output_dir / "checkpoints" / f"step-{stopped_at:06d}").is_dir()
    assert json.loads((job.output_dir / "run.json").read_text())["status"] == "stopped"
    assert "stopped at step" in job_panel(jobs, job.id, None)[1]

    resumed = jobs.resume(job)
    earlier = resumed.losses[:stopped_at]  # the curve goes on from loss.csv, which keeps 6 decimals
    assert earlier == [(step, pytest.approx(loss, abs=1e-6)) for step, loss in job.losses[:stopped_at]]
    wait_for(lambda: resumed.state == FINISHED)
    assert resumed.result.steps == 20 and [step for step, _ in resumed.losses] == list(range(1, 21))


def test_bad_pictures_are_refused_with_the_cli_messages(jobs, image_folder, tmp_path, capsys):
    from textual_inversion.config import UIConfig
    from textual_inversion.ui.teach_tab import check_images, submit_job

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "scan.png").write_bytes(b"not a picture")
    Image.new("RGB", (12, 12)).save(uploads / "icon.png")
    (uploads / "notes.txt").write_text("hello")
    good = image_folder / "0.png"

    accepted, problems = check_images([str(uploads / name) for name in ("scan.png", "icon.png", "notes.txt")] + [str(good)])
    assert accepted == [good] and len(problems) == 3
    assert problems[1].startswith("icon.png: image is 12x12, smaller than 32 px")
    assert problems[2].startswith("notes.txt: not an image")
    for name, problem in (("scan.png", problems[0]), ("icon.png", problems[1])):
        alone = tmp_path / f"only-{name}"  # the CLI, given the same file, says the same (naming the whole path)
        alone.mkdir()
        (alone / name).write_bytes((uploads / name).read_bytes())
        with pytest.raises(SystemExit):
            main(["train", "--images", str(alone), "--token", "<x>", "--init-token", "cat"])
        assert capsys.readouterr().err == f"error: {problem.replace(name, str(alone / name))}\n"

    ui = UIConfig(runs_dir=str(tmp_path / "runs"))
    values = {"token": "<x>", "init_token": "cat", "steps": 2}
    with pytest.raises(UserError, match="icon.png: image is 12x12"):
        submit_job(ui, jobs, [str(uploads / "icon.png"), str(good)], values)
    with pytest.raises(UserError, match="--token '<my cat>': give one new word"):
        submit_job(ui, jobs, [str(good)], {**values, "token": "<my cat>"})
    assert jobs.all() == []


def test_generate_writes_the_parameters_into_the_pngs_and_refuses_another_family(train_config, tiny_sd1_path,
                                                                                  tmp_path, capsys):
    from textual_inversion import train
    from textual_inversion.config import UIConfig
    from textual_inversion.ui.generate_tab import concept_choices, png_parameters, run_generation

    run = train(run_config(train_config, tmp_path, "<blob>")).output_dir
    assert concept_choices(str(tmp_path / "runs")) == [("<blob> · textual-inversion · blob", str(run))]
    values = {"prompt": "a photo of <blob>", "negative_prompt": "", "seed": 5, "steps": 2, "guidance": 3,
              "num_images": 2, "scheduler": "", "width": "", "height": ""}
    ui = UIConfig(model=tiny_sd1_path, outputs_dir=str(tmp_path / "outputs"), device="cpu")
    paths = run_generation(ui, [str(run)], [], values)
    assert [path.name for path in paths] == ["000005.png", "000006.png"]
    assert png_parameters(paths[1]).startswith("a photo of <blob>\nSteps: 2, Sampler: ")
    assert "Seed: 6" in png_parameters(paths[1])
    uploaded = run_generation(ui, [], [str(run / "learned_embeds.safetensors")], {**values, "num_images": 1})
    assert "Concepts: learned_embeds.safetensors" in png_parameters(uploaded[0])

    miniworld = UIConfig(model="miniworld", outputs_dir=str(tmp_path / "outputs"), device="cpu")
    with pytest.raises(UserError) as refused:
        run_generation(miniworld, [str(run)], [], values)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["generate", "--concept", str(run), "--prompt", "a photo of <blob>", "--device", "cpu",
              "--output-dir", str(tmp_path / "cli-outputs")])
    assert capsys.readouterr().err.strip() == f"error: {refused.value}"
    assert "fit Stable Diffusion 1.x" in str(refused.value)


def test_concepts_on_disk_are_listed_renamed_and_deleted(train_config, tiny_sd1_path, tmp_path):
    from textual_inversion import train
    from textual_inversion.concepts import load_concepts
    from textual_inversion.models import load_pipeline
    from textual_inversion.ui.library import delete_concept, list_concepts, rename_concept

    runs = tmp_path / "runs"
    run = train(run_config(train_config, tmp_path, "<blob>", validation_prompt="a photo of <blob>",
                           validation_every=2, validation_steps=1, num_validation_images=1)).output_dir
    (concept,) = list_concepts(runs)
    assert (concept.token, concept.method, concept.base_model, concept.status) == ("<blob>", "textual-inversion",
                                                                                   tiny_sd1_path, "finished")
    assert concept.preview == run / "previews" / "step-000002.png" and concept.created

    rename_concept(run, "<blob-2>")
    assert list_concepts(runs)[0].token == "<blob-2>"
    assert load_concepts(load_pipeline(tiny_sd1_path), [run]) == ["<blob-2>"]
    with pytest.raises(UserError, match="give one new word without spaces"):
        rename_concept(run, "two words")

    lora_run = runs / "lora-run"
    lora_run.mkdir()
    (lora_run / "run.json").write_text(json.dumps({"status": "finished", "config": {"method": "lora", "token": "sks"}}))
    with pytest.raises(UserError, match="lora run learned its word into the weights"):
        rename_concept(lora_run, "<other>")

    with pytest.raises(UserError, match="not a run folder under"):
        delete_concept(tmp_path, runs)
    delete_concept(run, runs)
    assert not run.exists() and [c.token for c in list_concepts(runs)] == ["sks"]


@pytest.mark.parametrize("host, allowed", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                           ("0.0.0.0", False), ("192.168.1.5", False), ("myhost", False)])
def test_only_loopback_without_allow_remote(host, allowed):
    from textual_inversion.config import UIConfig

    if allowed:
        UIConfig(host=host).validate()
    else:
        with pytest.raises(UserError, match=f"--host {host}: other machines could reach the page.*--allow-remote"):
            UIConfig(host=host).validate()
        UIConfig(host=host, allow_remote=True).validate()


def test_ui_command_errors_are_one_line(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ui", "--host", "0.0.0.0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit):
            main(["ui", "--port", str(port)])
    assert capsys.readouterr().err.startswith(f"error: --port {port}: cannot listen there")

    monkeypatch.setitem(sys.modules, "gradio", None)  # as if gradio were not installed
    with pytest.raises(SystemExit):
        main(["ui"])
    assert capsys.readouterr().err == ('error: the web page needs gradio: pip install "textual-inversion[ui]" '
                                       '(or pip install gradio)\n')


def test_a_flux_model_trains_and_generates_through_the_page(jobs, tiny_flux_path, tiny_sd1_path, image_folder,
                                                             tmp_path):
    from textual_inversion.config import GenerateConfig, TrainConfig, UIConfig
    from textual_inversion.formats import read_embedding
    from textual_inversion.ui import generate_tab
    from textual_inversion.ui.forms import field_input
    from textual_inversion.ui.jobs import ACTIVE
    from textual_inversion.ui.teach_tab import ADVANCED_FIELDS, MAIN_FIELDS, method_fields, submit_job

    ui = UIConfig(model=tiny_flux_path, runs_dir=str(tmp_path / "runs"), outputs_dir=str(tmp_path / "outputs"),
                  device="cpu")
    # The Teach form as the page sends it: every input at its starting value, the options of every method
    # included (--ti-encoders among textual-inversion's), a few changed by the user.
    assert "ti_encoders" in method_fields()["textual-inversion"]
    names = [*MAIN_FIELDS, *ADVANCED_FIELDS, *(name for names in method_fields().values() for name in names)]
    values = {name: field_input(TrainConfig, name).value for name in names}
    values.update(token="<blob>", init_token="cat", steps=2, batch_size=2, resolution=32, ti_encoders="clip_l, t5",
                  validation_prompt="a photo of {token}", validation_every=2, validation_steps=1,
                  num_validation_images=1)
    job = submit_job(ui, jobs, [str(path) for path in sorted(image_folder.iterdir())], values)
    wait_for(lambda: job.state not in ACTIVE, timeout=120)
    assert job.state == FINISHED, job.error
    assert set(read_embedding(job.output_dir / "learned_embeds.safetensors").vectors) == {"clip_l", "t5"}
    assert (job.output_dir / "previews" / "step-000002.png").is_file()

    # The Generate tab offers no scheduler for a flow-matching model (generate refuses one), as it does for SD.
    assert generate_tab.samples_by_flow_matching(ui)
    assert not generate_tab.samples_by_flow_matching(dataclasses.replace(ui, model=tiny_sd1_path))
    with gradio.Blocks() as page:
        generate_tab.build(ui, page)
    shown = {getattr(block, "elem_id", None) for block in page.blocks.values()}
    assert {"generate-prompt", "generate-width"} <= shown and "generate-scheduler" not in shown
    values = {name: field_input(GenerateConfig, name).value
              for name in (*generate_tab.MAIN_FIELDS, *generate_tab.ADVANCED_FIELDS)}
    values.update(prompt="a photo of <blob>", steps=2, num_images=1, seed=3)
    assert generate_tab.concept_choices(ui.runs_dir) == [("<blob> · textual-inversion · blob", str(job.output_dir))]
    (path,) = generate_tab.run_generation(ui, [str(job.output_dir)], [], values)
    assert path.name == "000003.png"
    assert "Sampler: FlowMatchEulerDiscreteScheduler" in generate_tab.png_parameters(path)
