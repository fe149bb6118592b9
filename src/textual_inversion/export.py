"""Share a learned concept: a run folder becomes a Hugging Face concept-library folder, optionally pushed to the hub.

The layout is the one the sd-concepts-library repos have (and diffusers' textual-inversion script writes):
`learned_embeds.bin` + `token_identifier.txt` + `type_of_concept.txt` + `concept_images/`, with a model card
`README.md`. Beside them: `learned_embeds.safetensors` (diffusers' `load_textual_inversion` looks for it
first), a copy named after the token for AUTOMATIC1111 and ComfyUI (they name the word after the file), and
for pivotal runs the LoRA. Flux, SD3 and Z-Image embeddings are `.safetensors` files keyed by text encoder:
no pickle and no AUTOMATIC1111 copy for them (neither exists for these families); Flux and SD3 get a ComfyUI
copy, with T5's vectors keyed `t5xxl`, and Z-Image none (no other tool reads its file). Only runs that
learned an embedding are exported: a LoRA or a DreamBooth pipeline has no word to share in this layout, and
its own files are already what diffusers loads.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .atomic import replaced_folder
from .concepts import CONCEPT_LIBRARY_FILES, run_outputs
from .errors import UserError
from .formats import read_embedding, write_embedding
from .methods import METHODS
from .model_card import (
    CONCEPT_IMAGES_DIR,
    CONCEPT_TYPE_FILE,
    MAX_SAMPLE_SIDE,
    SharedRun,
    has_library_pickle,
    model_card,
    word_file_format,
)
from .models import first_line, hub_unreachable, read_as
from .outputs import EMBEDDING, KOHYA_LORA, LORA, OUTPUT_FILES
from .rundir import PREVIEW_DIR, read_run_file, require_finished

logger = logging.getLogger(__name__)

LEGACY_EMBEDDING_FILE, TOKEN_FILE = CONCEPT_LIBRARY_FILES
PREVIEW_FILE = "preview.jpeg"
MODEL_CARD_FILE = "README.md"
MAX_SAMPLE_IMAGES = 4
# The base models' own licenses, which a concept made for them usually follows, as the front matter of their hub
# cards gives them: SD 1.x CreativeML OpenRAIL-M; SD 2.x and SDXL OpenRAIL++; FLUX.1 [dev] and SD 3.5 licenses the
# hub has no id for ("other", named by license_name: black-forest-labs/FLUX.1-dev, stabilityai/stable-diffusion-3.5-
# large); Z-Image Apache 2.0 (Tongyi-MAI/Z-Image-Turbo), as is FLUX.1 [schnell]. Anything else is "other" unless
# --license says.
LICENSE_OF_FAMILY = {"sd1": "creativeml-openrail-m", "sd2": "openrail++", "sdxl": "openrail++", "flux": "other",
                     "sd3": "other", "z-image": "apache-2.0"}
NAMED_LICENSES = {  # family: (license_name, license_link) for its "other"
    "flux": ("flux-1-dev-non-commercial-license",
             "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md"),
    "sd3": ("stabilityai-ai-community",
            "https://huggingface.co/stabilityai/stable-diffusion-3.5-large/blob/main/LICENSE.md"),
}


@dataclass
class ExportResult:
    """The folder written, the files in it (relative paths) and, after a push, the repo's URL."""

    folder: Path
    files: list[str]
    url: str | None = None


def read_shared_run(run_dir: str | Path) -> SharedRun:
    """The parts of a finished run that export writes; UserError for a run with no learned embedding."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder; give the folder `train` wrote (runs/<token>)")
    record = read_run_file(run_dir) or {}
    status = record.get("status")
    if status is not None:  # runs written before run.json had a status are finished ones
        require_finished(run_dir, status)
    outputs, _ = run_outputs(run_dir)
    if EMBEDDING not in outputs:
        held = ", ".join(path.name for path in outputs.values())
        with_word = ", ".join(name for name, method in METHODS.items() if method.adds_token)
        raise UserError(f"{run_dir}: export shares learned embeddings (runs of --method {with_word}); this run "
                        + (f"holds {held}: share those files as they are" if held else "holds no learned files"))
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    metadata = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
    embedding = read_embedding(outputs[EMBEDDING])
    previews = sorted((run_dir / PREVIEW_DIR).glob("step-*.png"))  # step numbers are zero-padded
    return SharedRun(run_dir, embedding, concept_type=config.get("property") or "object",
                     base_model=str(metadata.get("base_model") or config.get("model") or embedding.metadata.get(
                         "base_model", "")),
                     lora=outputs.get(LORA), kohya_lora=outputs.get(KOHYA_LORA),
                     images=training_images(config.get("images")), preview=previews[-1] if previews else None,
                     validation_prompt=config.get("validation_prompt"))


def training_images(folder: str | None) -> list[Path]:
    """The first few pictures of the run's --images folder; none (with a log line) when it is gone."""
    from .data import list_images

    if not folder or not Path(folder).is_dir():
        if folder:
            logger.warning("training images %s not found: the card shows none", folder)
        return []
    try:
        return list_images(folder)[:MAX_SAMPLE_IMAGES]
    except UserError:
        return []


def export_concept(run_dir: str | Path, output_dir: str | Path, overwrite: bool = False, license: str | None = None,
                   push_to_hub: str | None = None, private: bool = False) -> ExportResult:
    """Write `run_dir` as a concept-library folder at `output_dir`, whole; then push it to `push_to_hub`."""
    output_dir = Path(output_dir)
    if push_to_hub:
        check_repo_id(push_to_hub)
    elif private:
        raise UserError("--private: applies to the repo --push-to-hub creates; add --push-to-hub REPO_ID")
    check_destination(Path(run_dir), output_dir, overwrite)
    run = read_shared_run(run_dir)
    try:
        with replaced_folder(output_dir) as staging:
            files = write_concept_folder(run, staging, license, push_to_hub)
    except OSError as error:
        raise UserError(f"{output_dir}: could not write it ({error.strerror or error}); "
                        "free disk space or choose another folder") from None
    logger.debug("wrote %s (%d files)", output_dir, len(files))
    result = ExportResult(output_dir, files)
    if push_to_hub:
        result.url = push_folder(output_dir, push_to_hub, private)
    return result


def check_destination(run_dir: Path, output_dir: Path, overwrite: bool) -> None:
    """Refuse a destination that would replace the run itself, a file, or (without --overwrite) a folder's contents."""
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise UserError(f"{output_dir}: is a file; choose a folder name to export to")
    if run_dir.resolve() == output_dir.resolve() or output_dir.resolve() in run_dir.resolve().parents:
        raise UserError(f"{output_dir}: holds the run {run_dir} itself; choose another folder to export to")
    if any(output_dir.iterdir()) and not overwrite:
        raise UserError(f"{output_dir}: exists and is not empty; pass --overwrite to replace it, or choose another folder")


def file_stem(token: str) -> str:
    """The token as a file name: AUTOMATIC1111 and ComfyUI name the prompt word after the file (`<my-cat>` -> my-cat)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", token).strip("-.") or "concept"
    taken = {Path(OUTPUT_FILES[kind]).stem for kind in (EMBEDDING, LORA)}  # the export's other .safetensors files
    return f"{stem}-word" if stem in taken else stem


def write_concept_folder(run: SharedRun, folder: Path, license: str | None, repo_id: str | None) -> list[str]:
    """Every file of the export, into `folder`; returns their paths relative to it."""
    stem = file_stem(run.token)
    family = run.embedding.family
    write_embedding(run.embedding, folder / OUTPUT_FILES[EMBEDDING], "diffusers")
    if has_library_pickle(family):
        # The concept library's own file, for loaders that know only it (InvokeAI's, `generate --concept owner/name`).
        write_embedding(run.embedding, folder / LEGACY_EMBEDDING_FILE, "diffusers")
    layout = word_file_format(family)  # the copy UIs name the word after: SD's a1111, Flux's and SD3's comfyui
    if layout is not None:
        write_embedding(run.embedding, folder / f"{stem}.safetensors", layout)
    (folder / TOKEN_FILE).write_text(run.token, encoding="utf-8")
    (folder / CONCEPT_TYPE_FILE).write_text(run.concept_type, encoding="utf-8")
    if run.lora is not None:
        shutil.copyfile(run.lora, folder / OUTPUT_FILES[LORA])
    if run.kohya_lora is not None:
        shutil.copyfile(run.kohya_lora, folder / f"{stem}-lora.safetensors")
    samples = [save_sample(image, folder / CONCEPT_IMAGES_DIR / f"{index}.jpeg")
               for index, image in enumerate(run.images)]
    preview = save_sample(run.preview, folder / PREVIEW_FILE) if run.preview is not None else None
    license, license_name, license_link = card_license(run, license)
    card = model_card(run, license, repo_id, stem, [p.relative_to(folder).as_posix() for p in samples],
                      preview.name if preview else None, base_model_id(run.base_model), license_name,
                      license_link)
    (folder / MODEL_CARD_FILE).write_text(card, encoding="utf-8")
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


def card_license(run: SharedRun, chosen: str | None) -> tuple[str, str | None, str | None]:
    """(license, license_name, license_link) for the card: --license as given, else the base model's."""
    if chosen:
        return chosen, None, None
    family = run.embedding.family
    if family == "flux" and "schnell" in run.base_model.lower():  # FLUX.1 [schnell] is Apache 2.0, unlike [dev]
        return "apache-2.0", None, None
    return LICENSE_OF_FAMILY.get(family, "other"), *NAMED_LICENSES.get(family, (None, None))


def save_sample(source: Path, target: Path) -> Path:
    """A picture as a JPEG at most MAX_SAMPLE_SIDE pixels on its longer side (a card needs no more)."""
    from .data import load_rgb

    image = load_rgb(source)
    image.thumbnail((MAX_SAMPLE_SIDE, MAX_SAMPLE_SIDE))
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, format="JPEG", quality=90)
    return target


def base_model_id(base_model: str) -> str | None:
    """The base model as a hub id for the card's `base_model` field; None for miniworld, a folder or a file,
    which the hub cannot link (it refuses a card whose base_model is no model id)."""
    if not base_model or Path(base_model).exists() or "/" not in base_model or read_as(base_model) != "hub id":
        return None
    return base_model


def check_repo_id(repo_id: str) -> None:
    """Refuse a malformed --push-to-hub before anything is written."""
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except ValueError as error:
        raise UserError(f"--push-to-hub {repo_id}: not a repo id ({first_line(error)}); give owner/name") from None


def push_folder(folder: Path, repo_id: str, private: bool = False) -> str:
    """Upload `folder` to the model repo `repo_id`, created (private if asked) when missing; returns its URL."""
    later = f"push it later with `hf upload {repo_id} {folder} .{' --private' if private else ''}`"
    unreachable = hub_unreachable()
    if unreachable:
        raise UserError(f"--push-to-hub {repo_id}: wrote {folder}, but the hub cannot be reached ({unreachable}); "
                        f"{later}")
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=getattr(url, "repo_id", repo_id), folder_path=str(folder),
                          commit_message=f"Upload the concept {folder.name} (textual-inversion export)")
    except (HfHubHTTPError, httpx.HTTPError, OSError, ValueError) as error:
        raise UserError(f"--push-to-hub {repo_id}: wrote {folder}, but the upload failed ({first_line(error)}); "
                        f"log in with `hf auth login` if needed, then {later}") from None
    logger.debug("pushed %s to %s", folder, url)
    return str(url)
