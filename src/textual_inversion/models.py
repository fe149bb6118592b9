"""Load a base model (hub id, local diffusers folder, single file, or miniworld) and name its family.

The family decides which embedding files fit: SD 1.x has one 768-wide CLIP text encoder, SD 2.x one
1024-wide OpenCLIP encoder, SDXL two (768 `clip_l` and 1280 `clip_g`). Other widths (miniworld, tiny
test models) are "sd-like" and fit only files of their own width.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

from .errors import UserError
from .formats import family_of_width

logger = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")  # "owner/name"; anything else that does not exist is a bad path
PIPELINE_CLASSES = {"StableDiffusionPipeline": StableDiffusionPipeline,
                    "StableDiffusionXLPipeline": StableDiffusionXLPipeline}
SINGLE_FILE_FAMILIES = {"v1": "sd1", "v2": "sd2", "xl_base": "sdxl"}


def resolve_model_path(model: str) -> str:
    """'miniworld' -> the packaged model folder; anything else unchanged."""
    if model == "miniworld":
        from .miniworld import model_path

        try:
            return model_path()
        except FileNotFoundError as error:
            raise UserError(f"--model miniworld: {error}") from None
    return model


def text_encoders(pipe) -> list[tuple[str, object, object]]:
    """(name, tokenizer, text encoder) for each text encoder the pipeline has, `clip_l` first for SDXL."""
    if isinstance(pipe, StableDiffusionXLPipeline):
        return [("clip_l", pipe.tokenizer, pipe.text_encoder), ("clip_g", pipe.tokenizer_2, pipe.text_encoder_2)]
    return [("text_encoder", pipe.tokenizer, pipe.text_encoder)]


def model_family(pipe) -> str:
    """'sdxl', 'sd2', 'sd1', or 'sd-like-<width>' for other text-encoder widths."""
    if isinstance(pipe, StableDiffusionXLPipeline):
        return "sdxl"
    return family_of_width(pipe.text_encoder.get_input_embeddings().weight.shape[-1])


def load_pipeline(model: str, model_config: str | None = None, dtype: torch.dtype = torch.float32):
    """Load a Stable Diffusion (1.x, 2.x, XL) pipeline from any of the places users keep one."""
    location = resolve_model_path(model)
    path = Path(location)
    if path.is_file():
        return load_single_file(path, model_config, dtype)
    if path.is_dir():
        return load_folder(path, dtype)
    if path.suffix in SINGLE_FILE_SUFFIXES or not HUB_ID.fullmatch(location):
        raise UserError(f"--model {model}: no such file or folder")
    return load_hub(location, dtype)


def pipeline_class_of_folder(path: Path) -> type:
    """The pipeline class named in a diffusers folder's model_index.json."""
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise UserError(f"--model {path}: not a diffusers model folder (no model_index.json); "
                        "pass the folder that save_pretrained wrote, or a single .safetensors file")
    try:
        class_name = json.loads(index_file.read_text())["_class_name"]
    except (json.JSONDecodeError, KeyError):
        raise UserError(f"{index_file}: unreadable model_index.json; re-download or re-save the model") from None
    if class_name not in PIPELINE_CLASSES:
        raise UserError(f"--model {path}: a {class_name}; this tool supports {', '.join(PIPELINE_CLASSES)}")
    return PIPELINE_CLASSES[class_name]


def load_folder(path: Path, dtype: torch.dtype):
    pipeline_class = pipeline_class_of_folder(path)
    try:
        extra = {"safety_checker": None, "requires_safety_checker": False} if pipeline_class is StableDiffusionPipeline else {}
        pipe = pipeline_class.from_pretrained(path, dtype=dtype, local_files_only=True, **extra)
    except (OSError, ValueError, RuntimeError) as error:
        raise UserError(f"--model {path}: the model folder is broken or incomplete ({first_line(error)})") from None
    return pipe


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set now, read as huggingface_hub reads it.

    huggingface_hub reads the variable once, at import (`constants.HF_HUB_OFFLINE`); reading it at call time
    honours a change made afterwards (a test, a notebook cell).
    """
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def load_hub(repo_id: str, dtype: torch.dtype):
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = hub_offline()
    try:
        folder = snapshot_download(repo_id, allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model"],
                                   local_files_only=offline)
    except LocalEntryNotFoundError:
        raise UserError(f"--model {repo_id}: not in the local Hugging Face cache and the hub cannot be reached "
                        "(offline); download it where there is a network and pass --model /path/to/folder") from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise UserError(f"--model {repo_id}: cannot fetch it from the hub ({first_line(error)}); "
                        "check the id, or pass a local folder or .safetensors file") from None
    return load_folder(Path(folder), dtype)


def single_file_family(path: Path) -> str:
    """Detect SD1/SD2/SDXL from the tensor names of an original-layout checkpoint."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type, load_single_file_checkpoint

    try:
        checkpoint = load_single_file_checkpoint(str(path), local_files_only=True)
    except pickle.UnpicklingError as error:  # diffusers opens .ckpt pickles with weights_only=True
        raise UserError(f"--model {path}: refused: the checkpoint holds Python objects other than tensors, and "
                        f"loading them could run code ({first_line(error)[:150]}); use a .safetensors file") from None
    except Exception as error:  # safetensors and torch raise many types for a damaged file
        raise UserError(f"--model {path}: cannot read this checkpoint ({first_line(error)}); is the file complete?") from None
    try:
        model_type = infer_diffusers_model_type(checkpoint)
    except Exception:
        model_type = None
    family = SINGLE_FILE_FAMILIES.get(model_type)
    if family is None:
        raise UserError(f"--model {path}: not a Stable Diffusion 1.x, 2.x or XL checkpoint (detected {model_type!r})")
    return family


def load_single_file(path: Path, model_config: str | None, dtype: torch.dtype):
    if path.suffix not in SINGLE_FILE_SUFFIXES:
        raise UserError(f"--model {path}: a single-file model must end in {' or '.join(SINGLE_FILE_SUFFIXES)}")
    family = single_file_family(path)
    pipeline_class = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    kwargs = {"dtype": dtype, "local_files_only": True}
    if model_config:
        kwargs["config"] = model_config
    try:
        pipe = pipeline_class.from_single_file(str(path), **kwargs)
    except Exception as error:  # from_single_file wraps many failures (missing config, bad keys)
        hint = "" if model_config else "; offline, pass --model-config with a diffusers folder of the same architecture"
        raise UserError(f"--model {path}: cannot build a {family} pipeline from it ({first_line(error)}){hint}") from None
    if getattr(pipe, "safety_checker", None) is not None:
        pipe.safety_checker = None
    return pipe


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def pick_device(requested: str) -> torch.device:
    """'auto' -> cuda, then mps, then cpu; anything else as given, checked."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise UserError(f"--device {requested}: not a device name (try cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {requested}: no CUDA GPU is available here; use --device cpu")
    return device
