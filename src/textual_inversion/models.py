"""Load a base model (hub id, local diffusers folder, single file, or miniworld) and name its family.

The family decides which embedding files fit: SD 1.x has one 768-wide CLIP text encoder, SD 2.x one
1024-wide OpenCLIP encoder, SDXL two (768 `clip_l` and 1280 `clip_g`). Other widths (miniworld, tiny
test models) are "sd-like" and fit only files of their own width. The transformer-era families are named
by their pipeline: Flux.1 (`clip_l` + `t5`), Stable Diffusion 3.x (`clip_l` + `clip_g` + `t5`) and
Z-Image (a Qwen3 language model, `qwen3`); their denoiser is `pipe.transformer`, trained by flow matching.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import json
import logging
import os
import pickle
import re
import socket
from pathlib import Path

import torch
from diffusers import (
    FluxPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    ZImagePipeline,
)

from .errors import UserError
from .formats import Embedding, family_label, family_of_width

logger = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
LOCAL_FILE_SUFFIXES = (*SINGLE_FILE_SUFFIXES, ".pt", ".bin")  # a name ending so is a file, never a hub id
HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")  # "owner/name"; anything else that does not exist is a bad path
# What a diffusers repo's pipeline is made of: the index and each component's folder (configs, tokenizer
# files, T5's SentencePiece model, weights). Not the single-file checkpoints many repos also keep at the top
# (FLUX.1-dev keeps its whole transformer again as flux1-dev.safetensors; SD 1.5's repo several whole models).
HUB_FILES = ["model_index.json", "*/*.json", "*/*.txt", "*/*.safetensors", "*/*.model"]
# The transformer-era pipelines by family name; each has `pipe.transformer` where SD has `pipe.unet`.
TRANSFORMER_FAMILIES = {"flux": FluxPipeline, "sd3": StableDiffusion3Pipeline, "z-image": ZImagePipeline}
PIPELINE_CLASSES = {cls.__name__: cls for cls in (StableDiffusionPipeline, StableDiffusionXLPipeline,
                                                  *TRANSFORMER_FAMILIES.values())}
SINGLE_FILE_FAMILIES = {"v1": "sd1", "v2": "sd2", "xl_base": "sdxl", "flux-dev": "flux", "flux-schnell": "flux",
                        "sd3": "sd3", "sd35_medium": "sd3", "sd35_large": "sd3", "z-image-turbo": "z-image"}
SINGLE_FILE_PIPELINES = {"sdxl": StableDiffusionXLPipeline, **TRANSFORMER_FAMILIES}
# Each pipeline's text encoders as (file key, tokenizer attribute, encoder attribute). The keys are the ones
# the tools people load these files in write: A1111/kohya's clip_l/clip_g, the diffusers Flux script's and
# OneTrainer's t5; an LLM encoder is keyed by its model (ours: no other tool has such files yet).
ENCODER_KEYS = {
    StableDiffusionXLPipeline: (("clip_l", "tokenizer", "text_encoder"), ("clip_g", "tokenizer_2", "text_encoder_2")),
    FluxPipeline: (("clip_l", "tokenizer", "text_encoder"), ("t5", "tokenizer_2", "text_encoder_2")),
    StableDiffusion3Pipeline: (("clip_l", "tokenizer", "text_encoder"), ("clip_g", "tokenizer_2", "text_encoder_2"),
                               ("t5", "tokenizer_3", "text_encoder_3")),
    ZImagePipeline: (("qwen3", "tokenizer", "text_encoder"),),
}


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
    """(file key, tokenizer, text encoder) for each text encoder the pipeline has, in `ENCODER_KEYS` order
    (`text_encoder` alone for SD 1.x/2.x); an encoder the pipeline was loaded without (SD3's T5) is left out."""
    for pipeline_class, keys in ENCODER_KEYS.items():
        if isinstance(pipe, pipeline_class):
            return [(key, getattr(pipe, tokenizer), getattr(pipe, encoder)) for key, tokenizer, encoder in keys
                    if getattr(pipe, encoder, None) is not None]
    return [("text_encoder", pipe.tokenizer, pipe.text_encoder)]


def model_family(pipe) -> str:
    """'flux', 'sd3', 'z-image', 'sdxl', 'sd2', 'sd1', or 'sd-like-<width>' for other text-encoder widths."""
    for family, pipeline_class in TRANSFORMER_FAMILIES.items():
        if isinstance(pipe, pipeline_class):
            return family
    if isinstance(pipe, StableDiffusionXLPipeline):
        return "sdxl"
    return family_of_width(pipe.text_encoder.get_input_embeddings().weight.shape[-1])


def prompt_arguments(pipe, prompt: str | list[str], negative_prompt: str | list[str] | None = None) -> dict:
    """The pipeline's prompt keyword arguments for `prompt` (and `negative_prompt`), multi-vector tokens spelled
    out for each of its tokenizers where the pipeline does not do it itself (SD3, whose three encoders each get
    their own `prompt_N`, and Z-Image)."""
    from diffusers.loaders import TextualInversionLoaderMixin

    from .tokens import spell_out_vectors

    arguments = {"prompt": prompt} if negative_prompt is None else {"prompt": prompt, "negative_prompt": negative_prompt}
    if isinstance(pipe, TextualInversionLoaderMixin) or not is_transformer_family(pipe):
        return arguments

    def spelled(text, tokenizer):
        return [spell_out_vectors(t, tokenizer) for t in text] if isinstance(text, list) else spell_out_vectors(text, tokenizer)

    spelled_out = {}
    for number, (_, tokenizer, _) in enumerate(text_encoders(pipe), start=1):
        suffix = "" if number == 1 else f"_{number}"
        for name, text in arguments.items():
            spelled_out[f"{name}{suffix}"] = spelled(text, tokenizer)
    return spelled_out


def is_transformer_family(pipe) -> bool:
    """Whether the pipeline denoises with a transformer trained by flow matching (Flux, SD3, Z-Image)."""
    return isinstance(pipe, tuple(TRANSFORMER_FAMILIES.values()))


def denoiser(pipe) -> torch.nn.Module:
    """The network that predicts the noise (SD's UNet) or the flow (the transformer families')."""
    return pipe.transformer if is_transformer_family(pipe) else pipe.unet


def default_resolution(pipe) -> int:
    """The side in pixels the model was trained at: SD's UNet sample size, else the pipeline's default (1024 for
    Flux and SD3); the VAE's scale turns latent pixels into image pixels."""
    if not is_transformer_family(pipe):
        return pipe.unet.config.sample_size * pipe.vae_scale_factor
    sample_size = getattr(pipe, "default_sample_size", None)
    return sample_size * pipe.vae_scale_factor if sample_size else 1024


def guidance_scale(pipe, chosen: float | None) -> float:
    """`chosen`, or where none was the scale the pipeline's own `__call__` defaults to (7.5 for SD 1.x/2.x, 5 for
    SDXL, 3.5 for Flux, 7 for SD3): each family's authors chose theirs for it, so SD's 7.5 is not carried over."""
    return chosen if chosen is not None else inspect.signature(type(pipe).__call__).parameters["guidance_scale"].default


def load_pipeline(model: str, model_config: str | None = None, dtype: torch.dtype = torch.float32,
                  quantize: str = "no"):
    """Load a pipeline (SD 1.x, 2.x, XL, 3.x, Flux.1, Z-Image) from any of the places users keep one; `quantize`
    (nf4, fp8) loads a transformer family's transformer quantised (see `quantized_transformer`)."""
    location = resolve_model_path(model)
    path = Path(location)
    if path.is_file():
        if quantize != "no":
            raise UserError(f"--quantize-transformer {quantize}: works with a diffusers folder or hub id, not a "
                            "single file; save the model with save_pretrained first")
        return load_single_file(path, model_config, dtype)
    if path.is_dir():
        return load_folder(path, dtype, quantize)
    meant = read_as(location)
    if meant == "path":
        raise UserError(f"--model {model}: no such file or folder")
    return load_hub(location, dtype, cache_only=meant == "either", quantize=quantize)


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


def load_folder(path: Path, dtype: torch.dtype, quantize: str = "no"):
    pipeline_class = pipeline_class_of_folder(path)
    try:
        extra = {"safety_checker": None, "requires_safety_checker": False} if pipeline_class is StableDiffusionPipeline else {}
        if quantize != "no":
            extra["transformer"] = quantized_transformer(path, pipeline_class, dtype, quantize)
        pipe = pipeline_class.from_pretrained(path, dtype=dtype, local_files_only=True, **extra)
    except (OSError, ValueError, RuntimeError) as error:
        raise UserError(f"--model {path}: the model folder is broken or incomplete ({first_line(error)})") from None
    return pipe


def quantized_transformer(path: Path, pipeline_class: type, dtype: torch.dtype, quantize: str):
    """The folder's transformer with its linear layers' weights quantised, through diffusers' quantisation support:
    nf4 by bitsandbytes (4-bit NormalFloat, as in QLoRA; diffusers quantises with it on CUDA only), fp8 by
    optimum-quanto (float8 weights, dequantised per layer as it runs; works on the CPU too). It stays frozen: the
    token rows and LoRA adapters learn in full precision around it."""
    import diffusers

    if pipeline_class not in TRANSFORMER_FAMILIES.values():
        raise UserError(f"--quantize-transformer {quantize}: for Flux, SD3 and Z-Image models, not a "
                        f"{pipeline_class.__name__}")
    if quantize == "nf4":
        if not torch.cuda.is_available():
            raise UserError("--quantize-transformer nf4: bitsandbytes quantises on a CUDA GPU only; use fp8 here")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise UserError("--quantize-transformer nf4 needs bitsandbytes: pip install bitsandbytes")
        config = diffusers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                              bnb_4bit_compute_dtype=dtype if dtype != torch.float32 else torch.bfloat16)
    else:
        if importlib.util.find_spec("optimum") is None or importlib.util.find_spec("optimum.quanto") is None:
            raise UserError("--quantize-transformer fp8 needs optimum-quanto: pip install optimum-quanto")
        config = diffusers.QuantoConfig(weights_dtype="float8")
    index = json.loads((path / "model_index.json").read_text())
    transformer_class = getattr(diffusers, index["transformer"][1])
    return transformer_class.from_pretrained(path, subfolder="transformer", quantization_config=config, dtype=dtype,
                                             local_files_only=True)


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set now, read as huggingface_hub reads it.

    huggingface_hub reads the variable once, at import (`constants.HF_HUB_OFFLINE`); reading it at call time
    honours a change made afterwards (a test, a notebook cell).
    """
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be used now ("offline: HF_HUB_OFFLINE is set", "no connection to ..."), or None.

    Asked before every download: told it may use the network, huggingface_hub retries an unreachable hub
    for half a minute before it falls back to its cache, so a known-unreachable hub means `local_files_only`.
    """
    return "offline: HF_HUB_OFFLINE is set" if hub_offline() else probe_hub()


@functools.cache
def probe_hub(timeout: float = 2.0) -> str | None:
    """One TCP connection to the hub's host (or the proxy for it), once per process: None if it answers, else why not."""
    from urllib.parse import urlparse
    from urllib.request import getproxies, proxy_bypass

    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    proxy = getproxies().get(endpoint.scheme)
    if proxy and not proxy_bypass(endpoint.hostname or ""):
        endpoint = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except (OSError, ValueError) as error:
        return f"no connection to {endpoint.hostname}:{port}: {first_line(error)}"
    return None


def read_as(spec: str) -> str:
    """What a --model or --concept that names nothing on disk was meant to be: "path" (./x, /x, ~/x, a/b/c,
    x.safetensors, not `owner/name`), "either" (`runs/x` where runs/ is a folder here) or "hub id"."""
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or Path(spec).suffix in LOCAL_FILE_SUFFIXES \
            or not HUB_ID.fullmatch(spec):
        return "path"
    return "either" if "/" in spec and Path(spec.split("/")[0]).is_dir() else "hub id"


def load_hub(repo_id: str, dtype: torch.dtype, cache_only: bool = False, quantize: str = "no"):
    """A hub model through the Hugging Face cache; with `cache_only` (or an unreachable hub) from the cache alone."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    unreachable = None if cache_only else hub_unreachable()
    try:
        folder = snapshot_download(repo_id, allow_patterns=HUB_FILES,
                                   local_files_only=cache_only or unreachable is not None)
    except LocalEntryNotFoundError:
        if cache_only:
            raise UserError(f"--model {repo_id}: no such folder here, and not in the Hugging Face cache; "
                            "check the path") from None
        raise UserError(f"--model {repo_id}: not in the Hugging Face cache and the hub cannot be reached "
                        f"({unreachable}); download it where there is a network and pass "
                        "--model /path/to/folder") from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise UserError(f"--model {repo_id}: cannot fetch it from the hub ({first_line(error)}); "
                        "check the id, or pass a local folder or .safetensors file") from None
    return load_folder(Path(folder), dtype, quantize)


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
        raise UserError(f"--model {path}: not a Stable Diffusion 1.x, 2.x, XL, 3.x, Flux.1 or Z-Image checkpoint "
                        f"(detected {model_type!r})")
    return family


def load_single_file(path: Path, model_config: str | None, dtype: torch.dtype):
    if path.suffix not in SINGLE_FILE_SUFFIXES:
        raise UserError(f"--model {path}: a single-file model must end in {' or '.join(SINGLE_FILE_SUFFIXES)}")
    family = single_file_family(path)
    pipeline_class = SINGLE_FILE_PIPELINES.get(family, StableDiffusionPipeline)
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


def use_threads(threads: int | None) -> int:
    """Make torch compute with `threads` CPU threads (None: `default_threads()`); returns how many."""
    count = default_threads() if threads is None else threads
    if count < 1:
        raise UserError(f"--threads {threads}: must be at least 1")
    torch.set_num_threads(count)
    return count


def default_threads() -> int:
    """The thread count when --threads is not given: OMP_NUM_THREADS if set, else half the CPUs this process
    may use (at least 1). With every core each, two torch jobs on one machine make both crawl (OpenMP threads
    spin while they wait for each other): on 2 cores a short training took 11x longer beside a second one
    with 2 threads, 1.7x with 1 (benchmarks/results/threads.md)."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return int(os.environ["OMP_NUM_THREADS"])
    return max(1, usable_cpus() // 2)


def usable_cpus() -> int:
    """How many CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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


def check_fits(embedding: Embedding, pipe, source: str) -> None:
    """Refuse an embedding made for another model family, naming both widths. A transformer family's file may
    hold vectors for some of its encoders only (trained with --ti-encoders); the others then read the token as text."""
    wanted = {name: encoder.get_input_embeddings().weight.shape[-1] for name, _, encoder in text_encoders(pipe)}
    if is_transformer_family(pipe):
        have = embedding.widths()
        fits = embedding.family == model_family(pipe) and all(wanted.get(k) == v for k, v in have.items())
    else:
        fits = embedding.widths() == wanted
    if not fits:
        have = ", ".join(f"{k} {v}" for k, v in embedding.widths().items())
        need = ", ".join(f"{k} {v}" for k, v in wanted.items())
        raise UserError(f"{source}: embedding widths ({have}) fit {family_label(embedding.family)}, but the model "
                        f"({model_family(pipe)}) needs {need}; use an embedding trained for this model")
