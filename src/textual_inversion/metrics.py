"""The metrics papers report for personalization: DINO, CLIP-I and CLIP-T, as DreamBench computes them.

- DINO: mean cosine similarity between the DINO ViT CLS embeddings of every generated image and
  every training image (DreamBooth paper, ViT-S/16).
- CLIP-I: the same with CLIP image embeddings.
- CLIP-T: mean cosine similarity between each generated image's CLIP embedding and its prompt with
  the learned token removed.
Models come from transformers by hub id or local folder; offline without them the error says what
to download and where to point.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from PIL import Image

from .errors import UserError

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
DEFAULT_DINO = "facebook/dino-vits16"


def mean_pairwise_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity over all pairs (rows of `a` x rows of `b`)."""
    return (F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T).mean().item()


def mean_matched_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity of row i of `a` with row i of `b`."""
    return F.cosine_similarity(a.float(), b.float(), dim=-1).mean().item()


def remove_token(prompt: str, token: str) -> str:
    """The prompt CLIP-T scores against: the learned token (and its extra vectors) taken out."""
    text = re.sub(rf"{re.escape(token)}(_\d+)?", " ", prompt)
    return re.sub(r"\s+", " ", text).strip()


def load_model(kind: str, name: str):
    """(model, processor) for `kind` 'clip' or 'dino', by hub id or folder; a clear error offline."""
    from transformers import AutoImageProcessor, AutoModel, CLIPModel, CLIPProcessor

    try:
        if kind == "clip":
            return CLIPModel.from_pretrained(name).eval(), CLIPProcessor.from_pretrained(name)
        return AutoModel.from_pretrained(name).eval(), AutoImageProcessor.from_pretrained(name)
    except OSError:
        option = "--clip" if kind == "clip" else "--dino"
        raise UserError(f"{option} {name}: model not found locally and the hub cannot be reached; on a machine "
                        f"with a network run `hf download {name} --local-dir {name.split('/')[-1]}`, copy the "
                        f"folder here and pass {option} /path/to/{name.split('/')[-1]}") from None


class FeatureExtractor:
    """CLIP image/text and DINO image embeddings for lists of PIL images and strings."""

    def __init__(self, clip: str = DEFAULT_CLIP, dino: str = DEFAULT_DINO, device: str = "cpu"):
        self.device = device
        self.clip, self.clip_processor = load_model("clip", clip)
        self.dino, self.dino_processor = load_model("dino", dino)
        self.clip.to(device)
        self.dino.to(device)

    @torch.no_grad()
    def clip_images(self, images: list[Image.Image]) -> torch.Tensor:
        inputs = self.clip_processor(images=images, return_tensors="pt").to(self.device)
        return as_tensor(self.clip.get_image_features(**inputs))

    @torch.no_grad()
    def clip_texts(self, texts: list[str]) -> torch.Tensor:
        inputs = self.clip_processor(text=texts, return_tensors="pt", padding=True, truncation=True).to(self.device)
        return as_tensor(self.clip.get_text_features(**inputs))

    @torch.no_grad()
    def dino_images(self, images: list[Image.Image]) -> torch.Tensor:
        inputs = self.dino_processor(images=images, return_tensors="pt").to(self.device)
        return self.dino(**inputs).last_hidden_state[:, 0]  # the CLS token, as DreamBench uses


def as_tensor(output) -> torch.Tensor:
    """transformers 5 may return a model output object where 4.x returned the tensor."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output if getattr(output, "pooler_output", None) is not None else output[0]


def score_images(features: FeatureExtractor, generated: list[Image.Image], prompts: list[str],
                 real: list[Image.Image], token: str) -> dict[str, float]:
    """DINO, CLIP-I and CLIP-T of `generated` (image i made from prompts[i]) against `real`."""
    return {
        "dino": mean_pairwise_cosine(features.dino_images(generated), features.dino_images(real)),
        "clip_i": mean_pairwise_cosine(features.clip_images(generated), features.clip_images(real)),
        "clip_t": mean_matched_cosine(features.clip_images(generated),
                                      features.clip_texts([remove_token(p, token) for p in prompts])),
    }
