"""Embedding files as the field trades them, read and written safely.

Layouts (all hold one token, possibly several vectors):
- diffusers: `{token: [n, dim]}` in `.safetensors`, or the legacy pickled `.bin`; SDXL: `{clip_l, clip_g}`
- AUTOMATIC1111 / ComfyUI: `.pt` with `string_to_param["*"]`, or `.safetensors` with `emb_params`;
  SDXL: `.safetensors` with `clip_l` and `clip_g`
- kohya: `.safetensors` with `emb_params` (SDXL: `clip_l` and `clip_g`)
- AUTOMATIC1111's embedding PNG (`a1111-png`): a preview picture carrying the `.pt` dict (png_embedding.py)
- Flux.1 (`clip_l`, `t5`), SD 3.x (`clip_l`, `clip_g`, `t5`): `.safetensors` with one key per text encoder, as
  diffusers' Flux script and OneTrainer write them; `comfyui` writes T5's as `t5xxl`, which ComfyUI reads (both
  are read); Z-Image (`qwen3`): ours, one key per encoder and the family in the metadata
Pickles are opened with `weights_only=True`: a file that needs anything but tensors and plain
containers to load is refused, because unpickling it could run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import atomic_path
from .embedding import (  # noqa: F401 (the data type, re-exported: files and embeddings are read from here)
    COMFYUI_T5_KEY,
    FAMILY_OF_WIDTH,
    SDXL_KEYS,
    SINGLE_ENCODER,
    TRANSFORMER_KEYS,
    Embedding,
    a1111_dict,
    family_of_width,
)
from .errors import UserError

FORMATS = ("diffusers", "a1111", "kohya", "a1111-png", "comfyui")
ENCODER_FILE_KEYS = {key for keys in TRANSFORMER_KEYS.values() for key in keys} | {COMFYUI_T5_KEY}
# What an AUTOMATIC1111 .pt carries besides its vectors, kept as metadata under the same names.
A1111_FIELDS = ("name", "step", "sd_checkpoint", "sd_checkpoint_name")


def read_embedding(path: str | Path, token: str | None = None) -> Embedding:
    """Read any supported embedding file; `token` overrides the token stored in it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such embedding file")
    if path.suffix == ".safetensors":
        tensors, metadata = read_safetensors(path)
    elif path.suffix in (".pt", ".bin", ".ckpt", ".pth"):
        tensors, metadata = read_pickle(path), {}
    elif path.suffix.lower() == ".png":
        from .png_embedding import read_png_data  # Pillow and numpy, for this one format

        tensors, metadata = read_png_data(path)
    else:
        raise UserError(f"{path}: unknown embedding file type; expected .safetensors, .pt, .bin or .png")
    embedding = embedding_from_dict(path, tensors, metadata)
    if token:
        embedding.token = token
    return embedding


def read_safetensors(path: Path) -> tuple[dict, dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise UserError(f"{path}: not a readable .safetensors file ({error})") from None


def tensor_names(path: str | Path) -> list[str]:
    """The tensor names in a .safetensors file, read from its header only; [] for another file type or an unreadable
    file (whoever reads it next names the problem). What tells LoRAs, bundles and embeddings apart."""
    if Path(path).suffix != ".safetensors":
        return []
    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except (SafetensorError, OSError):
        return []


def read_pickle(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).split("\n")[0][:200]
        raise UserError(f"{path}: refused: the file holds Python objects other than tensors, and loading them "
                        f"could run code ({reason}); get a .safetensors version of it") from None
    except Exception as error:  # the restricted unpickler raises any type (IndexError, KeyError...) on garbage
        raise UserError(f"{path}: not a readable PyTorch file ({type(error).__name__}: {str(error)[:150]})") from None


def embedding_from_dict(path: Path, data, metadata: dict[str, str]) -> Embedding:
    """Recognise the layout of a loaded file and pull out token and vectors."""
    stored_token = metadata.get("token")
    stored_format = metadata.get("format") if metadata.get("format") in FORMATS else None  # as we wrote it

    def found(token: str, vectors: dict[str, torch.Tensor], layout: str) -> Embedding:
        return Embedding(token, vectors, metadata, f"{layout} {path.suffix}")

    if isinstance(data, torch.Tensor):
        return found(stored_token or path.stem, {SINGLE_ENCODER: as_matrix(path, data)}, "bare tensor")
    if not isinstance(data, dict) or not data:
        raise UserError(f"{path}: not an embedding file (found {type(data).__name__})")
    if set(data) <= ENCODER_FILE_KEYS and not (set(data) == set(SDXL_KEYS) and metadata.get("family") != "sd3"):
        # a transformer family's, one key per encoder (ComfyUI's t5xxl read as t5)
        vectors = {"t5" if key == COMFYUI_T5_KEY else key: as_matrix(path, tensor) for key, tensor in data.items()}
        layout = "ComfyUI t5xxl" if COMFYUI_T5_KEY in data else stored_format or "per-encoder keys"
        return found(stored_token or path.stem, vectors, f"{layout} ({', '.join(data)})")
    if all(key in data for key in SDXL_KEYS):
        vectors = {key: as_matrix(path, data[key]) for key in SDXL_KEYS}
        return found(stored_token or path.stem, vectors, stored_format or "SDXL clip_l + clip_g")
    if "string_to_param" in data:  # AUTOMATIC1111 .pt; A1111 names the token after the file
        params = data["string_to_param"]
        if not isinstance(params, dict) or not params:
            raise UserError(f"{path}: AUTOMATIC1111 embedding with an empty string_to_param")
        tensor = params.get("*", next(iter(params.values())))
        name = data.get("name") if isinstance(data.get("name"), str) else None
        metadata.update({key: str(data[key]) for key in A1111_FIELDS if data.get(key) not in (None, "")})
        return found(stored_token or name or path.stem, {SINGLE_ENCODER: as_matrix(path, tensor)}, "a1111")
    if "emb_params" in data:  # kohya's layout, which A1111 reads and writes too
        return found(stored_token or path.stem, {SINGLE_ENCODER: as_matrix(path, data["emb_params"])},
                     stored_format or "kohya")
    if len(data) == 1:
        token, tensor = next(iter(data.items()))
        layout = "concept-library" if path.suffix == ".bin" else "diffusers"  # the library's learned_embeds.bin
        return found(stored_token or str(token), {SINGLE_ENCODER: as_matrix(path, tensor)}, layout)
    keys = ", ".join(sorted(map(str, data))[:5])
    raise UserError(f"{path}: not an embedding file (keys: {keys}); expected a token->tensor entry, "
                    "string_to_param, emb_params, or clip_l/clip_g")


def as_matrix(path: Path, tensor) -> torch.Tensor:
    """Vectors as float32 [n, dim]; the concept library's 1-D single vectors become [1, dim]."""
    if (not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tensor.dim() not in (1, 2)
            or tensor.numel() == 0):
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise UserError(f"{path}: expected embedding vectors of shape [n, dim], found {shape}")
    matrix = tensor.detach().float().reshape(-1, tensor.shape[-1])
    if not torch.isfinite(matrix).all():
        raise UserError(f"{path}: the embedding holds NaN or infinite values; it was saved from a diverged run")
    return matrix.contiguous()


def write_embedding(embedding: Embedding, path: str | Path, format: str = "diffusers",
                    preview: str | Path | None = None) -> Path:
    """Write `embedding` in `format` (diffusers, a1111, kohya, a1111-png); the file type follows the suffix.

    `preview`: the picture an a1111-png shows (default: a card with the token)."""
    path = Path(path)
    if format not in FORMATS:
        raise UserError(f"--format {format}: choose one of {', '.join(FORMATS)}")
    family = embedding.family
    vectors = {name: tensor.detach().float().contiguous().cpu() for name, tensor in embedding.vectors.items()}
    metadata = {**embedding.metadata, "token": embedding.token, "format": format}
    if family in TRANSFORMER_KEYS:
        return write_encoder_keys(embedding, vectors, path, format, {**metadata, "family": family})
    if format == "a1111-png":
        from .png_embedding import write_png_embedding  # Pillow and numpy, for this one format

        return write_png_embedding(embedding, path, preview)
    if path.suffix.lower() == ".png":
        raise UserError(f"{path}: a .png holds an embedding only as AUTOMATIC1111's picture; pass --format a1111-png")
    sdxl = family == "sdxl"
    if format == "comfyui":
        raise UserError(f"--format comfyui renames T5's key, and {embedding.token} has none; ComfyUI reads the "
                        "a1111 and diffusers layouts of this file")
    if path.suffix == ".safetensors":
        if sdxl:
            payload = vectors
        elif format == "diffusers":
            payload = {embedding.token: vectors[SINGLE_ENCODER]}
        else:
            payload = {"emb_params": vectors[SINGLE_ENCODER]}
        with atomic_path(path) as temporary:
            save_file(payload, str(temporary), metadata={k: str(v) for k, v in metadata.items()})
        return path
    if path.suffix in (".pt", ".bin"):
        if format == "kohya":
            raise UserError(f"{path}: kohya embeddings are .safetensors files; change the suffix")
        if format == "a1111":
            if sdxl:
                raise UserError(f"{path}: AUTOMATIC1111 stores SDXL embeddings as .safetensors; change the suffix")
            payload = a1111_dict(embedding, vectors[SINGLE_ENCODER])
        else:
            payload = vectors if sdxl else {embedding.token: vectors[SINGLE_ENCODER]}
        with atomic_path(path) as temporary:
            torch.save(payload, temporary)
        return path
    raise UserError(f"{path}: unknown output type; end the name in .safetensors, .pt or .bin")


def write_encoder_keys(embedding: Embedding, vectors: dict[str, torch.Tensor], path: Path, format: str,
                       metadata: dict[str, str]) -> Path:
    """A transformer family's file: `.safetensors` with one key per encoder (`comfyui`: T5's as t5xxl)."""
    if format not in ("diffusers", "comfyui"):
        raise UserError(f"--format {format}: {family_label(embedding.family)} embeddings are written as diffusers "
                        "(the diffusers Flux script's and OneTrainer's keys) or comfyui (T5 as t5xxl)")
    if path.suffix != ".safetensors":
        raise UserError(f"{path}: {family_label(embedding.family)} embeddings are .safetensors files; change the suffix")
    if format == "comfyui":
        vectors = {COMFYUI_T5_KEY if key == "t5" else key: tensor for key, tensor in vectors.items()}
    with atomic_path(path) as temporary:
        save_file(vectors, str(temporary), metadata={k: str(v) for k, v in metadata.items()})
    return path


def describe(embedding: Embedding) -> str:
    """A few human-readable lines: token, vectors, widths, family, the file's format, stored training metadata."""
    widths = ", ".join(f"{name} {width}" for name, width in embedding.widths().items())
    lines = [f"token:    {embedding.token}",
             f"vectors:  {embedding.num_vectors}",
             f"width:    {widths}",
             f"norms:    {vector_norms(embedding)}",
             f"fits:     {family_label(embedding.family)}"]
    if embedding.file_format or "format" in embedding.metadata:
        lines.append(f"format:   {embedding.file_format or embedding.metadata['format']}")
    for key in ("base_model", "family", "method", "steps", "init_embedding", "merge", "created", "tool_version",
                *A1111_FIELDS):
        if key in embedding.metadata and not (key == "name" and embedding.metadata[key] == embedding.token):
            lines.append(f"{key + ':':<9} {embedding.metadata[key]}")
    return "\n".join(lines)


def vector_norms(embedding: Embedding) -> str:
    """Each vector's length, per text encoder: 'text_encoder 0.412, 0.388'."""
    return "; ".join(f"{name} " + ", ".join(f"{norm:.4g}" for norm in tensor.float().norm(dim=-1).tolist())
                     for name, tensor in embedding.vectors.items())


def family_label(family: str) -> str:
    labels = {"sd1": "Stable Diffusion 1.x (768-wide CLIP)", "sd2": "Stable Diffusion 2.x (1024-wide OpenCLIP)",
              "sdxl": "Stable Diffusion XL (clip_l 768 + clip_g 1280)", "flux": "Flux.1 (clip_l and/or t5)",
              "sd3": "Stable Diffusion 3.x (clip_l, clip_g and/or t5)", "z-image": "Z-Image (qwen3)",
              "unknown": "no known model family"}
    return labels.get(family, f"models whose text encoder is {family.removeprefix('sd-like-')} wide (e.g. miniworld)")
