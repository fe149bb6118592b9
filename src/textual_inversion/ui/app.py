"""The page: three tabs (Teach, Generate, Concepts) over one server-wide training queue."""

from __future__ import annotations

import gradio as gr

from ..config import UIConfig
from . import concepts_tab, generate_tab, teach_tab
from .generate_tab import concept_choices
from .jobs import TrainingJobs

# System fonts: the default theme would fetch its fonts from Google, and the page must work offline.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def build_app(ui: UIConfig, jobs: TrainingJobs) -> gr.Blocks:
    """The Gradio page for `ui`'s model, folders and device; training goes through `jobs`."""
    with gr.Blocks(title="textual-inversion", analytics_enabled=False) as page:
        gr.Markdown(f"## textual-inversion · model `{ui.model}`\nTeach the model a new word from 3-5 pictures, "
                    "then use it in prompts. Training keeps running when you close or reload this page.")
        with gr.Tabs():
            with gr.Tab("Teach", id="teach"):
                teach_tab.build(ui, jobs, page)
            with gr.Tab("Generate", id="generate") as generate:
                concept_list = generate_tab.build(ui, page)
            with gr.Tab("Concepts", id="concepts") as concepts:
                refresh_concepts, concept_listing = concepts_tab.build(ui, jobs)

        def list_runs():  # runs finish while the page is open: list them anew whenever the tab opens
            return gr.update(choices=concept_choices(ui.runs_dir))

        for event in (page.load, generate.select):
            event(list_runs, None, concept_list)
        for event in (page.load, concepts.select):
            event(refresh_concepts, None, concept_listing)
    return page
