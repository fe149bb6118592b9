"""A learned token in memory: its vectors per text encoder, and the model family they fit.

The files it is read from and written to are `formats.py`'s (and `png_embedding.py`'s, which needs the
dict AUTOMATIC1111 keeps a token in, `a1111_dict`, as its `.pt` files do).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

SDXL_KEYS = ("clip_l", "clip_g")
SINGLE_ENCODER = "text_encoder"
# A single text encoder's width names its model family (SDXL has two encoders, SDXL_KEYS).
FAMILY_OF_WIDTH = {768: "sd1", 1024: "sd2"}
# The transformer families' encoder keys (`models.ENCODER_KEYS`); a file may hold a subset (--ti-encoders).
TRANSFORMER_KEYS = {"flux": ("clip_l", "t5"), "sd3": ("clip_l", "clip_g", "t5"), "z-image": ("qwen3",)}
COMFYUI_T5_KEY = "t5xxl"  # ComfyUI's name for T5's vectors, where diffusers' Flux script and OneTrainer write t5


@dataclass
class Embedding:
    """One learned token: its vectors per text encoder (`text_encoder`, or `clip_l` + `clip_g`)."""

    token: str
    vectors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    file_format: str = ""  # the layout and file type it was read from, e.g. "a1111 .pt"; empty when made in memory

    @property
    def num_vectors(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    @property
    def family(self) -> str:
        """The model family these vectors fit: by the keys, and for a transformer-family file holding only some of
        its encoders (clip_l alone fits Flux and SD3) by the family its metadata names, else the first that fits."""
        keys = set(self.vectors)
        if keys == set(SDXL_KEYS) and self.metadata.get("family") != "sd3":
            return "sdxl"
        if SINGLE_ENCODER in keys:
            return family_of_width(self.vectors[SINGLE_ENCODER].shape[-1])
        fitting = [family for family, family_keys in TRANSFORMER_KEYS.items() if keys <= set(family_keys)]
        named = self.metadata.get("family")
        return named if named in fitting else (fitting[0] if fitting else "unknown")

    def widths(self) -> dict[str, int]:
        return {name: tensor.shape[-1] for name, tensor in self.vectors.items()}


def family_of_width(width: int) -> str:
    """'sd1' or 'sd2' for a single text encoder of that width, 'sd-like-<width>' for any other."""
    return FAMILY_OF_WIDTH.get(width, f"sd-like-{width}")


def a1111_dict(embedding: Embedding, vectors: torch.Tensor) -> dict:
    """The dict AUTOMATIC1111 keeps one token's `vectors` in (its .pt files, and its embedding PNGs)."""
    known = embedding.metadata  # ours (steps, base_model), else what an A1111 file we read carried
    return {"string_to_token": {"*": 265}, "string_to_param": {"*": vectors},
            "name": embedding.token, "step": int(known.get("steps") or known.get("step") or 0),
            "sd_checkpoint": known.get("sd_checkpoint"),
            "sd_checkpoint_name": known.get("base_model") or known.get("sd_checkpoint_name")}
