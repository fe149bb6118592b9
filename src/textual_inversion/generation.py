"""Generation: a pipeline plus learned concepts -> PNGs with their parameters, and a grid."""

from __future__ import annotations

import contextlib
import logging
import math
from datetime import datetime
from pathlib import Path

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
)
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .atomic import atomic_path
from .config import GenerateConfig
from .errors import UserError
from .prompts import has_weights, prompt_embeddings

logger = logging.getLogger(__name__)

SCHEDULERS = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler, "pndm": PNDMScheduler, "euler": EulerDiscreteScheduler,
              "euler-a": EulerAncestralDiscreteScheduler, "dpm++": DPMSolverMultistepScheduler,
              "lms": LMSDiscreteScheduler}


def sampler(pipe, name: str):
    """A new scheduler of kind `name` (a SCHEDULERS key) built from `pipe`'s scheduler's configuration."""
    from .models import is_transformer_family, model_family

    if is_transformer_family(pipe):
        raise UserError(f"--scheduler {name}: {model_family(pipe)} samples with its own flow-matching "
                        "scheduler; leave --scheduler out")
    if name not in SCHEDULERS:
        raise UserError(f"--scheduler {name}: choose one of {', '.join(SCHEDULERS)}")
    return SCHEDULERS[name].from_config(pipe.scheduler.config)


@contextlib.contextmanager
def using_sampler(pipe, name: str | None):
    """`pipe` samples with a new `name` scheduler (None: its own) inside the block, and its own one after:
    the pipeline may be a training run's, still in use."""
    if name is None:
        yield pipe
        return
    own = pipe.scheduler
    pipe.scheduler = sampler(pipe, name)
    try:
        yield pipe
    finally:
        pipe.scheduler = own


PRECISION_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
OUTPUTS_DIR = "outputs"  # without --output-dir, each `generate` writes into a new folder under it


def generate(config: GenerateConfig, pipe=None) -> list[Path]:
    """Generate `config.num_images` images; returns the PNG paths (the grid is written beside them)."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list
    from tqdm.auto import tqdm

    from .concepts import load_concepts, pipeline_of, read_concept, undefined_tokens
    from .models import (
        default_resolution,
        guidance_scale,
        is_transformer_family,
        load_pipeline,
        model_family,
        pick_device,
        prompt_arguments,
        use_threads,
    )

    config.validate()
    device = pick_device(config.device)
    use_threads(config.threads)
    # Under `accelerate launch` each process makes its share of the images; the main one draws the grid.
    processes = PartialState(cpu=device.type == "cpu")
    check_output_dir(config)
    processes.wait_for_everyone()  # every process has looked at --output-dir before any writes there
    dtype = PRECISION_DTYPES.get(config.precision, torch.float16 if device.type == "cuda" else torch.float32)
    defined = []
    if pipe is None:
        concepts = [read_concept(spec) for spec in config.concept]
        model = pipeline_of(concepts) or config.model  # a DreamBooth run is a whole model
        pipe = load_pipeline(model, config.model_config, dtype)
        defined = load_concepts(pipe, concepts)
    for option, text in (("--prompt", config.prompt), ("--negative-prompt", config.negative_prompt or "")):
        missing = [word for word in undefined_tokens(text, pipe.tokenizer) if word not in defined]
        if missing:
            raise UserError(f"{option} uses {', '.join(missing)} but no loaded --concept defines it; "
                            "add --concept with that token's embedding")
    if config.scheduler:
        pipe.scheduler = sampler(pipe, config.scheduler)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    # Prompts with A1111 weights, `(word:1.3)`, go in as embeddings that compel makes; plain ones go in as text,
    # read by the pipeline itself exactly as before.
    if has_weights(config.prompt) or has_weights(config.negative_prompt):
        if is_transformer_family(pipe):
            raise UserError(f"--prompt: weights like (word:1.3) work with SD 1.x, 2.x and XL, not "
                            f"{model_family(pipe)}; write the prompt without them")
        text_arguments = prompt_embeddings(pipe, config.prompt, config.negative_prompt)
    else:  # multi-vector tokens spelled out where the pipeline does not (SD3, Z-Image)
        text_arguments = prompt_arguments(pipe, config.prompt, config.negative_prompt)
    # Without --output-dir a new folder; the main process names it and the others write into the same one.
    output_dir = Path(broadcast_object_list([config.output_dir or str(new_output_folder(OUTPUTS_DIR))])[0])
    output_dir.mkdir(parents=True, exist_ok=True)
    width = config.width or default_resolution(pipe)
    height = config.height or default_resolution(pipe)
    guidance = guidance_scale(pipe, config.guidance)

    indices = list(range(config.num_images))
    with processes.split_between_processes(indices) as my_indices:
        for index in tqdm(my_indices, desc="generating", unit="image", disable=not processes.is_main_process):
            seed = config.seed + index
            image = pipe(**text_arguments, num_inference_steps=config.steps,
                         guidance_scale=guidance, width=width, height=height,
                         generator=torch.Generator().manual_seed(seed)).images[0]
            parameters = a1111_parameters(config, seed, width, height, guidance, type(pipe.scheduler).__name__)
            save_png(image, output_dir / f"{seed:06d}.png", parameters)
    processes.wait_for_everyone()
    paths = [output_dir / f"{config.seed + index:06d}.png" for index in indices]
    if processes.is_main_process:
        save_grid([Image.open(path).convert("RGB") for path in paths], output_dir / "grid.png")
    return paths


def check_output_dir(config: GenerateConfig) -> None:
    """Refuse an --output-dir that holds images already, unless --overwrite; writes nothing."""
    folder = Path(config.output_dir) if config.output_dir else None
    if folder is not None and not config.overwrite and folder.is_dir() and any(folder.glob("*.png")):
        raise UserError(f"--output-dir {folder}: holds images already; pass --overwrite to write into it (images "
                        f"of the same seeds are replaced), or leave --output-dir out for a new folder under {OUTPUTS_DIR}/")


def new_output_folder(outputs_dir: str | Path) -> Path:
    """outputs/<date-time>, with a suffix when two requests come in the same second; not created yet."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder, number = Path(outputs_dir) / stamp, 1
    while folder.exists():
        number += 1
        folder = Path(outputs_dir) / f"{stamp}-{number}"
    return folder


def a1111_parameters(config: GenerateConfig, seed: int, width: int, height: int, guidance: float, sampler: str) -> str:
    """The `parameters` PNG text chunk as AUTOMATIC1111 writes it, so its PNG-info tab reads ours."""
    lines = [config.prompt]
    if config.negative_prompt:
        lines.append(f"Negative prompt: {config.negative_prompt}")
    concepts = ", ".join(Path(str(c)).name for c in config.concept)
    lines.append(f"Steps: {config.steps}, Sampler: {sampler}, CFG scale: {guidance}, Seed: {seed}, "
                 f"Size: {width}x{height}, Model: {config.model}" + (f", Concepts: {concepts}" if concepts else ""))
    return "\n".join(lines)


def save_png(image: Image.Image, path: Path, parameters: str) -> None:
    info = PngInfo()
    info.add_text("parameters", parameters)
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG", pnginfo=info)


def save_grid(images: list[Image.Image], path: Path, columns: int | None = None) -> Path:
    """Tile `images` row by row, `columns` a row (default: a near-square grid), and write it atomically."""
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    grid = Image.new("RGB", (columns * width, rows * height), "white")
    for index, image in enumerate(images):
        grid.paste(image, ((index % columns) * width, (index // columns) * height))
    with atomic_path(path) as temporary:
        grid.save(temporary, format="PNG")
    return path
