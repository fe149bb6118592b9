"""LoRA files with their embeddings inside ("bundle" LoRA), as AUTOMATIC1111's built-in Lora extension and
OneTrainer trade them: one `.safetensors` with the LoRA in kohya's layout plus the embedding(s).

Keys (facts from AUTOMATIC1111's extensions-builtin/Lora/networks.py, which reads them, and OneTrainer's
modelSaver LoRA savers, which write them): `bundle_emb.<token>.<entry>`, the token running to the next dot:
- `string_to_param.*`: one text encoder's vectors [n, dim] (SD1/SD2), as A1111's `.pt` dict holds them;
- `clip_l` and `clip_g`: SDXL's two encoders; OneTrainer also writes `clip_l` alone for SD1;
- OneTrainer's `clip_l_out`/`clip_g_out` (vectors for its output-side embeddings) have no use here: skipped.
A1111 names the embedding after `<token>` and loads the LoRA from every other key.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import save_file

from .atomic import atomic_path
from .errors import UserError
from .formats import (
    SDXL_KEYS,
    SINGLE_ENCODER,
    Embedding,
    embedding_from_dict,
    read_safetensors,
    tensor_names,
)

logger = logging.getLogger(__name__)

BUNDLE_PREFIX = "bundle_emb."
SINGLE_ENCODER_ENTRY = "string_to_param.*"


def is_bundle(path: str | Path) -> bool:
    """A .safetensors file holding `bundle_emb.` keys."""
    return any(key.startswith(BUNDLE_PREFIX) for key in tensor_names(path))


def bundle_keys(embedding: Embedding) -> dict[str, torch.Tensor]:
    """The `bundle_emb.` entries of one embedding (see the module notes)."""
    if "." in embedding.token:  # readers end the token at the first dot after the prefix
        raise UserError(f"token {embedding.token}: a bundle LoRA cannot hold a token with a '.'; rename it")
    prefix = f"{BUNDLE_PREFIX}{embedding.token}."
    vectors = {name: tensor.detach().float().cpu().contiguous() for name, tensor in embedding.vectors.items()}
    if embedding.family == "sdxl":
        return {prefix + key: vectors[key] for key in SDXL_KEYS}
    return {prefix + SINGLE_ENCODER_ENTRY: vectors[SINGLE_ENCODER]}


def write_bundle(lora_state: dict[str, torch.Tensor], embeddings: list[Embedding], path: str | Path,
                 metadata: dict[str, str] | None = None) -> Path:
    """Write the kohya-layout `lora_state` and `embeddings` as one bundle .safetensors, atomically."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise UserError(f"{path}: a bundle LoRA is a .safetensors file; end the name in .safetensors")
    tensors = {key: value.contiguous() for key, value in lora_state.items()}
    for embedding in embeddings:
        entries = bundle_keys(embedding)
        if any(key in tensors for key in entries):
            raise UserError(f"{path}: token {embedding.token} given twice; a bundle holds each token once")
        tensors.update(entries)
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata={key: str(value) for key, value in (metadata or {}).items()})
    return path


def read_bundle(path: str | Path) -> tuple[list[Embedding], dict[str, torch.Tensor]]:
    """The embeddings a bundle LoRA carries, and its LoRA tensors without them (kohya's layout)."""
    path = Path(path)
    tensors, metadata = read_safetensors(path)
    entries: dict[str, dict] = {}
    lora_state = {}
    for key, tensor in tensors.items():
        if not key.startswith(BUNDLE_PREFIX):
            lora_state[key] = tensor
            continue
        token, _, entry = key[len(BUNDLE_PREFIX):].partition(".")
        if entry.startswith("string_to_param."):
            entries.setdefault(token, {}).setdefault("string_to_param", {})[entry.partition(".")[2]] = tensor
        elif entry.endswith("_out"):
            logger.info("%s: skipped %s (OneTrainer's output-side vectors, not used here)", path, key)
        else:
            entries.setdefault(token, {})[entry] = tensor
    embeddings = []
    for token, data in entries.items():
        if set(data) == {"clip_l"}:  # OneTrainer's SD1 layout: the single encoder under SDXL's first name
            data = {"emb_params": data["clip_l"]}
        stored = {key: value for key, value in metadata.items() if key not in ("token", "format")}
        embedding = embedding_from_dict(path, data, {**stored, "token": token})
        embedding.file_format = "lora bundle .safetensors"
        embeddings.append(embedding)
    if not embeddings:
        raise UserError(f"{path}: no bundle_emb entries; it is a plain LoRA, not a bundle")
    return embeddings, lora_state
