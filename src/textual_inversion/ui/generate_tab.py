"""The Generate tab: learned concepts (runs on disk, uploaded files) + prompt -> PNGs with their parameters.

The images are generation.py's own files, served as they are, so a downloaded PNG carries the
AUTOMATIC1111 `parameters` text chunk (prompt, seed, settings) that the CLI writes. Flux, SD3 and Z-Image
sample with their own flow-matching scheduler, which `generate` keeps (it refuses --scheduler): for those
models the tab offers no scheduler.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from PIL import Image

from ..config import GenerateConfig, UIConfig
from ..errors import UserError
from ..generation import SCHEDULERS, generate, new_output_folder
from .forms import config_from_form, field_input, shown_as_is
from .library import list_concepts

MAIN_FIELDS = ("prompt", "negative_prompt", "seed", "steps", "guidance", "num_images")
ADVANCED_FIELDS = ("width", "height")


def concept_choices(runs_dir: str) -> list[tuple[str, str]]:
    """(label, folder) for every run under `runs_dir` that holds something to load."""
    return [(concept.label(), str(concept.folder)) for concept in list_concepts(runs_dir) if concept.usable]


def samples_by_flow_matching(ui: UIConfig) -> bool:
    """Whether the page's model is a Flux, SD3 or Z-Image pipeline, read from its model_index.json (a folder, or a
    hub id in the Hugging Face cache) without loading it. A single-file model shows its family only once loaded:
    it keeps the scheduler choice, and `generate` says why if it refuses one."""
    from ..models import TRANSFORMER_FAMILIES, pipeline_class_of_folder, read_as, resolve_model_path

    spec = ui.model_config if ui.model_config and Path(ui.model).is_file() else ui.model
    try:
        folder: Path | None = Path(resolve_model_path(spec))
        if not folder.is_dir() and read_as(spec) != "path":
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(spec, "model_index.json")
            folder = Path(cached).parent if isinstance(cached, str) else None
        return folder is not None and folder.is_dir() and \
            pipeline_class_of_folder(folder) in TRANSFORMER_FAMILIES.values()
    except (UserError, ValueError):  # no model there, or not one this tool loads: `generate` will say so
        return False


def png_parameters(path: Path) -> str:
    """The `parameters` text chunk of a PNG written by generation.py."""
    with Image.open(path) as image:
        return image.text.get("parameters", "")


def run_generation(ui: UIConfig, concepts: list[str], uploads: list[str], values: dict) -> list[Path]:
    """Generate as the CLI would, into a new folder under the outputs folder; returns the PNGs."""
    config = config_from_form(GenerateConfig, values, {
        "model": ui.model, "model_config": ui.model_config, "device": ui.device, "threads": ui.threads,
        "concept": [*concepts, *uploads], "output_dir": str(new_output_folder(ui.outputs_dir))})
    return generate(config)


def build(ui: UIConfig, page: gr.Blocks) -> gr.CheckboxGroup:
    """Lay out the tab; returns the concept list, which the page refreshes when the tab is opened."""
    with gr.Row():
        with gr.Column():
            concepts = gr.CheckboxGroup(label="Learned concepts (runs)", elem_id="generate-concepts",
                                        info=f"the run folders under {ui.runs_dir}/; a concept made for another "
                                             "model is refused with the reason")
            uploads = gr.File(label="Embedding or LoRA files", file_count="multiple",
                              file_types=[".safetensors", ".pt", ".bin"], elem_id="generate-uploads")
            inputs = {name: field_input(GenerateConfig, name) for name in MAIN_FIELDS}
            with gr.Accordion("Advanced options", open=False):
                if not samples_by_flow_matching(ui):  # the SD schedulers do not apply to a flow-matching model
                    inputs["scheduler"] = field_input(GenerateConfig, "scheduler", value="",
                                                      choices=[("the model's own", ""), *SCHEDULERS])
                inputs.update({name: field_input(GenerateConfig, name) for name in ADVANCED_FIELDS})
            button = gr.Button("Generate", variant="primary", elem_id="generate-button")
            notice = gr.Markdown(elem_id="generate-notice")
        with gr.Column():
            gallery = gr.Gallery(label="Images (the caption holds each image's parameters)", columns=2,
                                 elem_id="generate-gallery")
            files = gr.File(label="Download (PNGs with their parameters)", file_count="multiple",
                            interactive=False, elem_id="generate-files")

    def on_generate(chosen, uploaded, *values):
        try:
            paths = run_generation(ui, chosen or [], uploaded or [], dict(zip(inputs, values, strict=True)))
        except UserError as error:
            return gr.skip(), gr.skip(), f"**Not generated:** {shown_as_is(str(error))}"
        captioned = [(str(path), png_parameters(path)) for path in paths]
        return captioned, [str(path) for path in paths], f"Wrote {len(paths)} image(s) to {paths[0].parent}."

    button.click(on_generate, [concepts, uploads, *inputs.values()], [gallery, files, notice])
    return concepts
