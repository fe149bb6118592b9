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
        """The model family these vectors fit."""
        if set(self.vectors) == set(SDXL_KEYS):
            return "sdxl"
        return family_of_width(self.vectors[SINGLE_ENCODER].shape[-1])

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
