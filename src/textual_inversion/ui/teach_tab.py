"""The Teach tab: pictures and options in, a training job out; then its progress, loss, previews and files.

The page only shows jobs: they live in the server's `TrainingJobs`. A timer asks every second for the
state of the job the page shows, so a refreshed or reopened page picks up where the job is.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr
import pandas as pd

from ..config import TrainConfig, UIConfig
from ..data import IMAGE_SUFFIXES, load_rgb
from ..errors import UserError
from ..methods import method_option_fields
from ..rundir import PREVIEW_DIR, check_output_dir
from .forms import config_from_form, field_input, shown_as_is
from .jobs import (
    ACTIVE,
    CANCELLED,
    FAILED,
    FINISHED,
    QUEUED,
    RUNNING,
    STOPPED,
    STOPPING,
    TrainingJob,
    TrainingJobs,
)
from .library import download_files

MAIN_FIELDS = ("token", "init_token", "method", "steps", "validation_prompt")
ADVANCED_FIELDS = ("lr", "batch_size", "property", "resolution", "bucket", "mask_weight", "validation_every",
                   "num_validation_images", "validation_steps", "checkpoint_every", "seed", "resume", "overwrite")
PREVIEW_PROMPT = "a photo of {token}"  # "{token}" becomes the new word when the job starts


def method_fields() -> dict[str, list[str]]:
    """{method: the option names listed under it}: its own options not already on the form (a shared one
    is listed under the first method that has it)."""
    grouped: dict[str, list[str]] = {}
    for name, option in method_option_fields().items():
        if name not in MAIN_FIELDS:
            grouped.setdefault(option.methods[0], []).append(name)
    return grouped


def check_images(paths: list[str]) -> tuple[list[Path], list[str]]:
    """The readable pictures among `paths`, and one line per rejected file (the CLI's messages)."""
    accepted, problems = [], []
    for path in map(Path, paths):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(f"{path.name}: not an image (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
            continue
        try:
            load_rgb(path)
        except UserError as error:
            # The upload's temporary folder means nothing to the user; its file name does.
            problems.append(str(error).replace(str(path), path.name))
            continue
        accepted.append(path)
    return accepted, problems


def images_note(accepted: list[Path], problems: list[str]) -> str:
    lines = [f"**Rejected** {shown_as_is(problem)}" for problem in problems]
    if accepted and not 3 <= len(accepted) <= 5:
        lines.append(f"{len(accepted)} picture(s): 3-5 varied pictures give the best concept")
    return "\n\n".join(lines)


def place_images(paths: list[Path], folder: Path) -> None:
    """Copy the uploads into the run's own `images/` folder, which the run then trains from."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for index, path in enumerate(paths, start=1):
        shutil.copyfile(path, folder / f"{index:02d}-{path.name}")


def submit_job(ui: UIConfig, jobs: TrainingJobs, files: list[str] | None, values: dict) -> TrainingJob:
    """Build the run's config from the form, check everything, place the pictures and queue the job."""
    values = dict(values)
    token = (values.get("token") or "").strip()
    if values.get("validation_prompt"):
        values["validation_prompt"] = values["validation_prompt"].replace("{token}", token)
    output_dir = Path(ui.runs_dir) / TrainConfig(token=token).resolved_output_dir().name  # runs/<token>, as the CLI
    config = config_from_form(TrainConfig, values, {
        "model": ui.model, "model_config": ui.model_config, "device": ui.device, "threads": ui.threads,
        "images": str(output_dir / "images"), "output_dir": str(output_dir)})
    config.validate()
    if config.resume:  # the pictures are those of the run being continued
        return jobs.submit(config)
    accepted, problems = check_images(files or [])
    if problems:
        raise UserError(problems[0])
    if not accepted:
        raise UserError("--images: add 3-5 pictures of your subject first")
    check_output_dir(config)  # before the pictures go into the folder
    jobs.check_folder_is_free(output_dir)
    place_images(accepted, Path(config.images))
    if config.overwrite:  # the page shows every preview in the folder: the replaced run's must go
        shutil.rmtree(output_dir / PREVIEW_DIR, ignore_errors=True)
    return jobs.submit(config)


def describe(job: TrainingJob, jobs: TrainingJobs) -> str:
    """One line on where the job stands."""
    head = f"**{shown_as_is(job.config.token)}** · {job.config.method} · job {job.id}"
    if job.state == QUEUED:
        running = jobs.running()
        behind = f", behind job {running.id}" if running else ""
        return f"{head} · queued (position {jobs.position(job)}){behind}"
    if job.state in (RUNNING, STOPPING):
        if not job.losses:
            return f"{head} · {job.state}: loading the model and encoding the pictures"
        recent = [loss for _, loss in job.losses[-20:]]
        eta = job.eta_seconds()
        parts = [f"step {job.step} / {job.config.steps}", f"loss {sum(recent) / len(recent):.4f}"]
        if eta is not None:
            parts.append(f"about {int(eta) // 60}:{int(eta) % 60:02d} left")
        if job.state == STOPPING:
            parts.append("stopping after this step (saving a checkpoint)")
        return f"{head} · {job.state} · " + " · ".join(parts)
    if job.state == FINISHED:
        return (f"{head} · finished: {job.result.steps} steps in {job.result.seconds:.0f} s, "
                f"final loss {job.result.final_loss:.4f}; the files are in {job.output_dir}")
    if job.state == STOPPED:
        return (f"{head} · stopped at step {job.result.steps}; a checkpoint is saved in "
                f"{job.output_dir / 'checkpoints'}; Resume continues from there")
    if job.state == FAILED:
        return f"{head} · failed: {shown_as_is(job.error)}"
    assert job.state == CANCELLED, job.state
    return f"{head} · cancelled before it started"


def progress_bar(job: TrainingJob) -> str:
    if job.state not in (RUNNING, STOPPING, FINISHED, STOPPED):
        return ""
    return (f'<progress value="{job.step}" max="{job.config.steps}" style="width:100%"></progress>'
            f'<div class="step-count">{job.step} / {job.config.steps} steps</div>')


def loss_table(job: TrainingJob) -> pd.DataFrame:
    # Typed columns even when empty: the plot keeps the axis types of its first data (object = categories).
    steps, losses = zip(*job.losses, strict=True) if job.losses else ((), ())
    return pd.DataFrame({"step": pd.Series(steps, dtype="int64"), "loss": pd.Series(losses, dtype="float64")})


def preview_images(job: TrainingJob) -> list[tuple[str, str]]:
    """The preview grids written so far (training.py saves one every --validation-every steps)."""
    grids = sorted((job.output_dir / PREVIEW_DIR).glob("step-*.png"))
    return [(str(path), f"step {int(path.stem.removeprefix('step-'))}") for path in grids]


def job_list(jobs: TrainingJobs) -> str:
    lines = []
    for job in jobs.all():
        where = f"position {jobs.position(job)}" if job.state == QUEUED else f"step {job.step} / {job.config.steps}"
        lines.append(f"- job {job.id}: {shown_as_is(job.config.token)} ({job.config.method}) · {job.state} · {where}")
    return "**Jobs on this server**\n" + "\n".join(lines) if lines else ""


def job_panel(jobs: TrainingJobs, shown_id: int | None, last_seen: tuple | None) -> tuple:
    """Everything the right-hand column shows for the page's job, or on a page just opened, the server's latest.

    The plot, previews and files are sent again only when the job has moved on since `last_seen`.
    """
    job = jobs.get(shown_id) or jobs.latest()
    if job is None:
        nothing = "No training yet: add pictures, name the new word and press Start."
        return (None, nothing, "", gr.skip(), gr.skip(), gr.skip(), "", gr.update(interactive=False),
                gr.update(visible=False), last_seen)
    grids = preview_images(job)
    outputs = download_files(job.output_dir) if job.state == FINISHED else []
    now_seen = (job.id, job.state, job.step, len(grids))
    changed = now_seen != last_seen
    return (job.id, describe(job, jobs), progress_bar(job),
            loss_table(job) if changed else gr.skip(),
            grids if changed else gr.skip(),
            [str(path) for path in outputs] if changed else gr.skip(),
            job_list(jobs), gr.update(interactive=job.state in ACTIVE),
            gr.update(visible=job.state == STOPPED), now_seen)


def build(ui: UIConfig, jobs: TrainingJobs, page: gr.Blocks) -> None:
    """Lay out the tab and wire its events; the page's `load` reattaches to the server's latest job."""
    shown_job = gr.State(None)  # the id of the job this page shows
    seen = gr.State(None)  # what the heavy outputs (plot, previews, files) showed at the last tick
    with gr.Row():
        with gr.Column():
            images = gr.File(label="Pictures of your subject (3-5)", file_count="multiple", file_types=["image"],
                             elem_id="teach-images")
            thumbnails = gr.Gallery(label="Accepted pictures", columns=5, height=150, allow_preview=False,
                                    interactive=False, elem_id="teach-thumbnails")
            image_notes = gr.Markdown(elem_id="teach-image-notes")
            inputs = {name: field_input(TrainConfig, name) for name in MAIN_FIELDS if name != "validation_prompt"}
            inputs["validation_prompt"] = field_input(TrainConfig, "validation_prompt", value=PREVIEW_PROMPT,
                                                      label="Preview prompt",
                                                      info="{token} stands for the new word; empty: no previews")
            with gr.Accordion("Advanced options", open=False, elem_id="teach-advanced"):
                inputs.update({name: field_input(TrainConfig, name) for name in ADVANCED_FIELDS})
            for method, names in method_fields().items():  # each registered method's own options
                with gr.Accordion(f"Options of {method}", open=False, elem_id=f"teach-options-{method}"):
                    inputs.update({name: field_input(TrainConfig, name) for name in names})
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_id="teach-start")
                stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="teach-stop")
                resume = gr.Button("Resume", visible=False, elem_id="teach-resume")
            notice = gr.Markdown(elem_id="teach-notice")
        with gr.Column():
            status = gr.Markdown(elem_id="teach-status")
            progress = gr.HTML(elem_id="teach-progress")
            loss_plot = gr.LinePlot(x="step", y="loss", label="Training loss", height=240, elem_id="teach-loss")
            previews = gr.Gallery(label="Previews", columns=4, fit_columns=False, elem_id="teach-previews")
            files = gr.File(label="Files of the finished run", file_count="multiple", interactive=False,
                            elem_id="teach-files")
            queue = gr.Markdown(elem_id="teach-queue")

    def show_uploads(paths):
        accepted, problems = check_images(paths or [])
        return [str(path) for path in accepted], images_note(accepted, problems)

    def start_job(shown_id, paths, *values):
        try:
            job = submit_job(ui, jobs, paths, dict(zip(inputs, values, strict=True)))
        except UserError as error:
            return shown_id, f"**Not started:** {shown_as_is(str(error))}"
        position, running = jobs.position(job), jobs.running()
        where = "started" if position in (None, 1) and running in (None, job) else f"queued (position {position})"
        return job.id, f"Job {job.id} ({shown_as_is(job.config.token)}) {where}."

    def stop_job(shown_id):
        job = jobs.get(shown_id)
        if job is not None:
            jobs.stop(job)

    def resume_job(shown_id):
        try:
            job = jobs.resume(jobs.get(shown_id))  # the button shows only for a stopped job
        except UserError as error:
            return shown_id, f"**Not resumed:** {shown_as_is(str(error))}"
        return job.id, f"Job {job.id} continues {shown_as_is(job.config.token)} from its checkpoint."

    images.change(show_uploads, images, [thumbnails, image_notes])
    start.click(start_job, [shown_job, images, *inputs.values()], [shown_job, notice])
    stop.click(stop_job, shown_job, None)
    resume.click(resume_job, shown_job, [shown_job, notice])
    view = [shown_job, status, progress, loss_plot, previews, files, queue, stop, resume, seen]
    def refresh(shown_id, last_seen):
        return job_panel(jobs, shown_id, last_seen)

    page.load(refresh, [shown_job, seen], view)
    gr.Timer(1.0).tick(refresh, [shown_job, seen], view, show_progress="hidden")
