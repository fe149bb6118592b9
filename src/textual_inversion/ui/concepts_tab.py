"""The Concepts tab: the runs on disk with their token, method, base model, date and preview; rename, delete."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from ..config import UIConfig
from ..errors import UserError
from .forms import shown_as_is
from .jobs import TrainingJobs
from .library import Concept, delete_concept, list_concepts, rename_concept

COLUMNS = ["token", "method", "base model", "status", "date", "folder"]
# The browser asks before deleting; the answer reaches Python through a hidden checkbox.
CONFIRM_DELETE = "(folder, _) => [folder, confirm(`Delete ${folder} and everything in it?`)]"


def concept_table(concepts: list[Concept]) -> pd.DataFrame:
    rows = [[c.token, c.method, c.base_model, c.status, c.created.replace("T", " ")[:16], str(c.folder)]
            for c in concepts]
    return pd.DataFrame(rows, columns=COLUMNS)


def build(ui: UIConfig, jobs: TrainingJobs) -> tuple:
    """Lay out the tab; returns the refresh function and its outputs, which the page calls when opened."""
    table = gr.Dataframe(value=pd.DataFrame(columns=COLUMNS), interactive=False, wrap=True, elem_id="concepts-table")
    previews = gr.Gallery(label="Previews (newest preview grid, else the first training picture)", columns=6,
                          fit_columns=False, height=220, elem_id="concepts-previews")
    with gr.Row():
        chosen = gr.Dropdown(label="Concept", choices=[], elem_id="concepts-chosen", scale=2)
        new_token = gr.Textbox(label="New word", placeholder="<new-name>", elem_id="concepts-new-token")
    with gr.Row():
        rename = gr.Button("Rename", elem_id="concepts-rename")
        delete = gr.Button("Delete", variant="stop", elem_id="concepts-delete")
    notice = gr.Markdown(elem_id="concepts-notice")
    delete_confirmed = gr.Checkbox(visible=False)

    def refresh():
        concepts = list_concepts(ui.runs_dir)
        gallery = [(str(c.preview), c.token) for c in concepts if c.preview is not None]
        choices = [(c.label(), str(c.folder)) for c in concepts]
        return concept_table(concepts), gallery, gr.update(choices=choices, value=None)

    def on_rename(folder, word):
        try:
            if not folder:
                raise UserError("choose a concept first")
            jobs.check_folder_is_free(folder)
            rename_concept(Path(folder), word.strip())
        except UserError as error:
            return *refresh(), f"**Not renamed:** {shown_as_is(str(error))}"
        return *refresh(), f"Renamed: the word is now {shown_as_is(word.strip())}."

    def on_delete(folder, confirmed):
        if not confirmed:
            return *refresh(), ""
        try:
            if not folder:
                raise UserError("choose a concept first")
            jobs.check_folder_is_free(folder)
            delete_concept(Path(folder), ui.runs_dir)
        except UserError as error:
            return *refresh(), f"**Not deleted:** {shown_as_is(str(error))}"
        return *refresh(), f"Deleted {folder}."

    listing = [table, previews, chosen]
    rename.click(on_rename, [chosen, new_token], [*listing, notice])
    delete.click(on_delete, [chosen, delete_confirmed], [*listing, notice], js=CONFIRM_DELETE)
    return refresh, listing
