"""Training data: an image folder becomes VAE latents, encoded once, plus captions.

Every image is encoded once per crop and once more flipped; each step then samples from the cached
latent distributions instead of running the VAE again. All randomness goes through one
`torch.Generator` so that a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError
from .images import to_tensor
from .templates import TEMPLATES

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MIN_IMAGE_SIDE = 32
MAX_IMAGE_SIDE = 2048  # larger pictures are reduced while decoding: a 12-megapixel photo stays cheap


def list_images(folder: str | Path) -> list[Path]:
    """The image files in `folder`, sorted; other files are skipped with a warning."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--images {folder}: no such folder; point it at a folder holding 3-5 pictures")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    # Captions (.txt) and a bundled concept's concept.toml belong beside the images; anything else is noted.
    skipped = [p.name for p in files
               if p.suffix.lower() not in IMAGE_SUFFIXES and p.suffix.lower() != ".txt" and p.name != "concept.toml"]
    if skipped:
        logger.warning("--images %s: skipped %d non-image file(s): %s", folder, len(skipped), ", ".join(skipped))
    if not images:
        raise UserError(f"--images {folder}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


def load_rgb(path: Path) -> Image.Image:
    """Open an image as upright 8-bit RGB: EXIF rotation applied, transparency composited on white."""
    try:
        with Image.open(path) as opened:
            if max(opened.size) > MAX_IMAGE_SIDE:
                opened.draft("RGB", (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))  # JPEG decodes at a reduced scale
            opened.load()
            image = ImageOps.exif_transpose(opened)
            if max(image.size) > MAX_IMAGE_SIDE:
                image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.Resampling.LANCZOS)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise UserError(f"{path}: cannot read this image ({error}); remove or replace the file") from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray((array / max(array.max(), 1) * 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("RGB")
    if min(image.size) < MIN_IMAGE_SIDE:
        raise UserError(f"{path}: image is {image.width}x{image.height}, smaller than {MIN_IMAGE_SIDE} px; use a larger picture")
    return image


def read_caption(image_path: Path, token: str) -> str | None:
    """The caption in `img.txt` beside `img.png`, with `{token}` filled in, or None."""
    caption_path = image_path.with_suffix(".txt")
    if not caption_path.is_file():
        return None
    try:
        text = caption_path.read_text(encoding="utf-8-sig").strip()  # -sig: drops a byte-order mark
    except UnicodeDecodeError as error:
        byte = f"byte 0x{error.object[error.start]:02x} at offset {error.start}"
        raise UserError(f"{caption_path}: caption is not UTF-8 text ({byte}); save it as UTF-8 in your editor") from None
    if "{token}" not in text:
        raise UserError(f"{caption_path}: caption has no {{token}} placeholder; write e.g. 'a photo of {{token}} on a table'")
    return text.replace("{token}", token)


def crop_and_resize(image: Image.Image, resolution: int, crop_box_origin: tuple[float, float]) -> tuple[Image.Image, tuple[int, int]]:
    """Scale the shorter side to `resolution`, then cut a square at the relative origin given (0..1, 0..1)."""
    scale = resolution / min(image.size)
    width, height = max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    left = round((width - resolution) * crop_box_origin[0])
    top = round((height - resolution) * crop_box_origin[1])
    return image.crop((left, top, left + resolution, top + resolution)), (top, left)


@dataclass
class LatentCache:
    """Cached VAE latent distributions (mean, std) for every image, crop and flip."""

    means: torch.Tensor  # [entries, C, h, w]
    stds: torch.Tensor
    image_index: list[int]  # which source image each entry came from
    flipped: list[bool]
    crop_top_left: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]  # (height, width) before resizing, for SDXL's size conditioning

    def size_conditions(self, entries: torch.Tensor) -> list[tuple[int, int, int, int]]:
        """SDXL's size conditioning per entry: original (height, width) and crop (top, left)."""
        return [(*self.original_sizes[e], *self.crop_top_left[e]) for e in entries.tolist()]

    def sample(self, entries: torch.Tensor, generator: torch.Generator, scaling_factor: float) -> torch.Tensor:
        """Draw latents for the given entries, as `latent_dist.sample()` would, times the VAE scale."""
        means, stds = self.means[entries], self.stds[entries]
        noise = torch.randn(means.shape, generator=generator, dtype=means.dtype)
        return (means + stds * noise) * scaling_factor


@torch.no_grad()
def encode_images(vae, images: list[Image.Image], resolution: int, crop: str, crop_variants: int,
                  flip: bool, seed: int, device: torch.device, dtype: torch.dtype) -> LatentCache:
    """Encode each image once per crop (and flipped, if `flip`) with the VAE."""
    crop_rng = random.Random(seed)
    views, image_index, flipped, crops, sizes = [], [], [], [], []
    for index, image in enumerate(images):
        origins = [(0.5, 0.5)] if crop == "center" else [(crop_rng.random(), crop_rng.random()) for _ in range(crop_variants)]
        for origin in origins:
            cropped, top_left = crop_and_resize(image, resolution, origin)
            for is_flipped in ([False, True] if flip else [False]):
                views.append(ImageOps.mirror(cropped) if is_flipped else cropped)
                image_index.append(index)
                flipped.append(is_flipped)
                crops.append(top_left)
                sizes.append((image.height, image.width))
    means, stds = [], []
    for start in range(0, len(views), 8):
        batch = to_tensor(views[start:start + 8]).to(device=device, dtype=dtype)
        distribution = vae.encode(batch).latent_dist
        means.append(distribution.mean.float().cpu())
        stds.append(distribution.std.float().cpu())
    # Contiguous: torch.cat of the distribution's channel slices comes out channels-last, and every training
    # step is then slower (benchmarks/results/step_overhead.md).
    return LatentCache(torch.cat(means).contiguous(), torch.cat(stds).contiguous(), image_index, flipped, crops, sizes)


def make_captions(image_paths: list[Path], prompt_token: str, property_kind: str) -> list[list[str]]:
    """Per image, the captions to draw from: its own `.txt` caption, or the paper's templates."""
    templates = [template.format(prompt_token) for template in TEMPLATES[property_kind]]
    captions = []
    for path in image_paths:
        own = read_caption(path, prompt_token)
        captions.append([own] if own is not None else templates)
    return captions


@dataclass
class TrainingData:
    """What a run learns from: the pictures, the captions to draw for each, and their latents once encoded."""

    image_paths: list[Path]
    images: list[Image.Image]  # upright RGB, as `load_rgb` gives them
    captions: list[list[str]]  # per image: its caption file's text, or the templates; the token filled in
    cache: LatentCache | None = None  # every picture's VAE latents (crops, flips), encoded once
    class_cache: LatentCache | None = None  # prior preservation: the class images' latents


def read_training_data(folder: str | Path, token: str, property_kind: str) -> TrainingData:
    """The pictures in `folder` and their captions; UserError naming a file that cannot be used."""
    image_paths = list_images(folder)
    images = [load_rgb(path) for path in image_paths]
    return TrainingData(image_paths, images, make_captions(image_paths, token, property_kind))


@dataclass
class Batch:
    """This process's share of one step's examples: the subject's pictures first, then as many class images."""

    latents: torch.Tensor  # [B, C, h, w], scaled for the UNet
    noise: torch.Tensor  # [B, C, h, w]
    timesteps: torch.Tensor  # [B]
    prompts: list[str]
    sizes: list[tuple]  # SDXL's (original height, width, crop top, left) per example
    subject_count: int  # the first rows; the rest are class images (prior preservation)


def draw_batch(data: TrainingData, batch_size: int, class_prompt: str | None, source: torch.Generator,
               num_train_timesteps: int, scaling_factor: float, process: int, processes: int) -> Batch:
    """The global batch drawn from `source` (subject pictures, then class images); the rows of `process`.

    Every process draws the same global batch from the shared generator and trains on its share;
    averaged gradients then equal those of the global batch on one process.
    """
    entries = torch.randint(len(data.cache.image_index), (batch_size,), generator=source)
    latents = data.cache.sample(entries, source, scaling_factor)
    prompts = [pick(data.captions[data.cache.image_index[e]], source) for e in entries.tolist()]
    sizes = data.cache.size_conditions(entries)
    if data.class_cache is not None:
        class_entries = torch.randint(len(data.class_cache.image_index), (batch_size,), generator=source)
        latents = torch.cat([latents, data.class_cache.sample(class_entries, source, scaling_factor)])
        prompts += [class_prompt] * batch_size
        sizes += data.class_cache.size_conditions(class_entries)
    noise = torch.randn(latents.shape, generator=source)
    timesteps = torch.randint(0, num_train_timesteps, (len(latents),), generator=source)
    share = batch_size // processes
    rows = list(range(process * share, (process + 1) * share))
    if data.class_cache is not None:
        rows += [batch_size + row for row in rows]
    return Batch(latents[rows], noise[rows], timesteps[rows], [prompts[r] for r in rows], [sizes[r] for r in rows],
                 share)


def pick(options: list[str], generator: torch.Generator) -> str:
    """One of `options`, drawn from `generator`."""
    return options[int(torch.randint(len(options), (1,), generator=generator))]
