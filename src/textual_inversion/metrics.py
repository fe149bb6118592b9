"""The metrics papers report for personalization: DINO, CLIP-I and CLIP-T, as DreamBench computes them.

- DINO: mean cosine similarity between the DINO ViT CLS embeddings of every generated image and
  every training image (DreamBooth paper, ViT-S/16).
- CLIP-I: the same with CLIP image embeddings.
- CLIP-T: mean cosine similarity between each generated image's CLIP embedding and its prompt with
  the learned token removed.
Models come from transformers by hub id or local folder; offline without them the error says what
to download and where to point (or, where the caller can do without them, their scores are skipped).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from .errors import UserError
from .models import first_line, hub_unreachable

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
DEFAULT_DINO = "facebook/dino-vits16"
SCORES_OF = {"dino": ("DINO",), "clip": ("CLIP-I", "CLIP-T")}  # the scores each model gives


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


class MissingModel(UserError):
    """A CLIP or DINO model that cannot be loaded: `reason` says why, the message also what to do."""

    def __init__(self, kind: str, name: str, reason: str):
        self.reason = reason
        folder = name.rstrip("/").split("/")[-1]
        super().__init__(f"--{kind} {name}: {reason}; on a machine with a network run `hf download {name} "
                         f"--local-dir {folder}`, copy the folder here and pass --{kind} /path/to/{folder}")


def load_model(kind: str, name: str):
    """(model, processor) for `kind` 'clip' or 'dino', by hub id or folder; `MissingModel` says why not."""
    from transformers import AutoImageProcessor, AutoModel, CLIPModel, CLIPProcessor

    unreachable = None if Path(name).exists() else hub_unreachable()  # then the cache alone, without retries
    cache_only = unreachable is not None
    try:
        if kind == "clip":
            return (CLIPModel.from_pretrained(name, local_files_only=cache_only).eval(),
                    CLIPProcessor.from_pretrained(name, local_files_only=cache_only))
        # transformers 5 does not pass local_files_only on to its look-up of a PEFT adapter: given separately.
        return (AutoModel.from_pretrained(name, local_files_only=cache_only,
                                          adapter_kwargs={"local_files_only": cache_only}).eval(),
                AutoImageProcessor.from_pretrained(name, local_files_only=cache_only))
    except OSError as error:
        if Path(name).exists():
            reason = f"not a {kind.upper()} model folder ({first_line(error)})"
        elif cache_only:
            reason = f"not in the Hugging Face cache and the hub cannot be reached ({unreachable})"
        else:
            reason = f"cannot be fetched from the hub ({first_line(error)})"
        raise MissingModel(kind, name, reason) from None


class FeatureExtractor:
    """CLIP image/text and DINO image embeddings for lists of PIL images and strings.

    A model whose kind is in `optional` ('clip', 'dino') may be missing: it is left out (None), and
    `skipped` names the scores that cannot be computed and why, instead of an error.
    """

    def __init__(self, clip: str = DEFAULT_CLIP, dino: str = DEFAULT_DINO, device: str = "cpu",
                 optional: Collection[str] = ()):
        self.device = device
        self.skipped: dict[str, tuple[str, str]] = {}  # kind of a missing model -> (its name, why it is missing)
        self.dino, self.dino_processor = self.load("dino", dino, optional)
        self.clip, self.clip_processor = self.load("clip", clip, optional)

    def load(self, kind: str, name: str, optional: Collection[str]) -> tuple:
        try:
            model, processor = load_model(kind, name)
        except MissingModel as missing:
            if kind not in optional:
                raise
            self.skipped[kind] = (name, missing.reason)
            return None, None
        return model.to(self.device), processor

    @property
    def available(self) -> bool:
        """Whether any score can be computed."""
        return self.clip is not None or self.dino is not None

    def skipped_line(self) -> str:
        """'skipped DINO, CLIP-I, CLIP-T: <model>: <why> (--clip FOLDER adds them)' for the log; '' if none is."""
        if not self.skipped:
            return ""
        names_by_reason: dict[str, list[str]] = {}
        for name, reason in self.skipped.values():
            names_by_reason.setdefault(reason, []).append(name)
        scores = [score for kind in self.skipped for score in SCORES_OF[kind]]
        reasons = "; ".join(f"{' and '.join(names)}: {reason}" for reason, names in names_by_reason.items())
        options = " and ".join(f"--{kind} FOLDER" for kind in self.skipped)
        return f"skipped {', '.join(scores)}: {reasons} ({options} add{'s' if len(self.skipped) == 1 else ''} them)"

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
    """DINO, CLIP-I and CLIP-T of `generated` (image i made from prompts[i]) against `real`; those whose
    model `features` has."""
    scores = {}
    if features.dino is not None:
        scores["dino"] = mean_pairwise_cosine(features.dino_images(generated), features.dino_images(real))
    if features.clip is not None:
        generated_clip = features.clip_images(generated)
        scores["clip_i"] = mean_pairwise_cosine(generated_clip, features.clip_images(real))
        scores["clip_t"] = mean_matched_cosine(generated_clip,
                                               features.clip_texts([remove_token(p, token) for p in prompts]))
    return scores
