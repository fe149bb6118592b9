"""Training data: an image folder becomes VAE latents, encoded once, plus captions and loss masks.

Every image is encoded once per crop and once more flipped; each step then samples from the cached
latent distributions instead of running the VAE again. With aspect-ratio bucketing (`buckets.py`) each
picture keeps its shape: it is encoded at the bucket size nearest to it, and a batch comes from one
bucket. A mask beside a picture (`img.mask.png`, or the picture's alpha channel) says where the subject
is; it becomes a weight per latent pixel for the loss. All randomness goes through one
`torch.Generator` so that a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError
from .images import to_tensor
from .templates import TEMPLATES

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MIN_IMAGE_SIDE = 32
MAX_IMAGE_SIDE = 2048  # larger pictures are reduced while decoding: a 12-megapixel photo stays cheap
MASK_SUFFIX = ".mask"  # img.mask.png beside img.png: white where the subject is


def is_mask_file(path: Path) -> bool:
    """`img.mask.png`: a picture's loss mask, not a training picture."""
    return Path(path.stem).suffix == MASK_SUFFIX


def list_images(folder: str | Path) -> list[Path]:
    """The image files in `folder`, sorted; other files are skipped with a warning."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--images {folder}: no such folder; point it at a folder holding 3-5 pictures")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and not is_mask_file(p)]
    orphans = [p.name for p in files if is_mask_file(p) and not any(mask_path(i) == p for i in images)]
    if orphans:
        raise UserError(f"--images {folder}: mask {orphans[0]} has no picture beside it; name a mask after its "
                        f"picture (img.png -> img{MASK_SUFFIX}.png)")
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
    return load_picture(path)[0]


def load_picture(path: Path) -> tuple[Image.Image, Image.Image | None]:
    """`load_rgb`'s picture, and its alpha channel as an "L" mask when it has any transparency (else None)."""
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
    alpha = None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema()[0] == 255:  # an alpha channel that hides nothing is no mask
            alpha = None
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("RGB")
    if min(image.size) < MIN_IMAGE_SIDE:
        raise UserError(f"{path}: image is {image.width}x{image.height}, smaller than {MIN_IMAGE_SIDE} px; use a larger picture")
    return image, alpha


def mask_path(image_path: Path) -> Path:
    return image_path.with_name(f"{image_path.stem}{MASK_SUFFIX}.png")


def read_mask(image_path: Path, image: Image.Image, alpha: Image.Image | None) -> Image.Image | None:
    """The picture's loss mask ("L", its size; white = subject): `img.mask.png` beside it, else its alpha
    channel, else None. A mask file of another shape is an error; one of the same shape is rescaled."""
    path = mask_path(image_path)
    if not path.is_file():
        return alpha
    try:
        with Image.open(path) as opened:
            mask = ImageOps.exif_transpose(opened).convert("L")
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise UserError(f"{path}: cannot read this mask ({error}); save it as a black-and-white PNG") from None
    if mask.size != image.size:
        if abs(mask.width / mask.height - image.width / image.height) > 0.01 * image.width / image.height:
            raise UserError(f"{path}: mask is {mask.width}x{mask.height} but its picture {image_path.name} is "
                            f"{image.width}x{image.height}; save the mask at the picture's size")
        mask = mask.resize(image.size, Image.Resampling.BILINEAR)
    return mask


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


def crop_and_resize(image: Image.Image, size: int | tuple[int, int], crop_box_origin: tuple[float, float],
                    resample: Image.Resampling = Image.Resampling.BICUBIC) -> tuple[Image.Image, tuple[int, int]]:
    """Scale the image to cover `size` (width, height; an int is a square), then cut that size at the
    relative origin given (0..1, 0..1). Returns the cut and its (top, left) in the scaled image."""
    target_width, target_height = (size, size) if isinstance(size, int) else size
    scale = max(target_width / image.width, target_height / image.height)
    width, height = max(target_width, round(image.width * scale)), max(target_height, round(image.height * scale))
    image = image.resize((width, height), resample)
    left = round((width - target_width) * crop_box_origin[0])
    top = round((height - target_height) * crop_box_origin[1])
    return image.crop((left, top, left + target_width, top + target_height)), (top, left)


@dataclass
class LatentCache:
    """Cached VAE latent distributions (mean, std) for every image, crop and flip of one picture size."""

    means: torch.Tensor  # [entries, C, h, w]
    stds: torch.Tensor
    image_index: list[int]  # which source image each entry came from
    flipped: list[bool]
    crop_top_left: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]  # (height, width) before resizing, for SDXL's size conditioning
    target_size: tuple[int, int]  # (height, width) in pixels of every entry
    masks: torch.Tensor | None = None  # [entries, 1, h, w] loss weights in 0..1; None: no picture has a mask

    def size_conditions(self, entries: torch.Tensor) -> list[tuple[int, ...]]:
        """SDXL's size conditioning per entry: original (height, width), crop (top, left), target (height, width)."""
        return [(*self.original_sizes[e], *self.crop_top_left[e], *self.target_size) for e in entries.tolist()]

    def sample(self, entries: torch.Tensor, generator: torch.Generator, scaling_factor: float,
               shift_factor: float = 0.0) -> torch.Tensor:
        """Draw latents for the given entries, as `latent_dist.sample()` would, shifted and scaled as the VAE says
        (Flux's and SD3's VAEs have a shift; SD's none)."""
        means, stds = self.means[entries], self.stds[entries]
        noise = torch.randn(means.shape, generator=generator, dtype=means.dtype)
        return (means + stds * noise - shift_factor) * scaling_factor


# Pixels the VAE encodes at once: in fp32, four 1024 px pictures at once took about 25 GB of a GPU beside SDXL
# (benchmarks/results/real_scale_cuda_sdxl.md), more than its training step needs.
ENCODE_PIXELS = 512 * 512


# Decoder inversion's Adam step, as a fraction of the latents' spread (miniworld's 1.4, SD's about 5 before scaling):
# at 0.035 on miniworld, 300 steps took a small star on grey from a dot to a star (docs/subjects.md).
REFINE_STEP = 0.035


def decoder_inversion(vae, pixels: torch.Tensor, start: torch.Tensor, steps: int) -> torch.Tensor:
    """The latents [B, C, h, w] whose decoding comes nearest `pixels` [B, 3, H, W] (in [-1, 1]): `steps` of Adam on
    the decoder's squared pixel error, from the encoder's means `start`. The VAE's weights do not change."""
    latents = start.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([latents], lr=REFINE_STEP * float(start.std()))
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.mse_loss(vae.decode(latents).sample.float(), pixels.float())
            (latents.grad,) = torch.autograd.grad(loss, latents)  # the VAE's own weights get no gradient
            optimizer.step()
    return latents.detach()


@torch.no_grad()
def encode_images(vae, images: list[Image.Image], sizes: int | list[tuple[int, int]], crop: str, crop_variants: int,
                  flip: bool, seed: int, device: torch.device, dtype: torch.dtype,
                  masks: list[Image.Image | None] | None = None, refine_steps: int = 0) -> list[LatentCache]:
    """Encode each image once per crop (and flipped, if `flip`) with the VAE, at its size in `sizes`
    ((width, height) per image, or one square side for all); one cache per distinct size, in size order.

    `masks` (an "L" image or None per picture) are cut like their pictures and averaged down to the latent
    grid; pictures without one weigh everywhere. Without any mask the caches hold no masks. `refine_steps` of
    decoder inversion move each mean to where the decoder redraws the picture (the spread stays the encoder's).
    """
    if isinstance(sizes, int):
        sizes = [(sizes, sizes)] * len(images)
    masks = masks if masks is not None and any(mask is not None for mask in masks) else None
    crop_rng = random.Random(seed)
    by_size: dict[tuple[int, int], dict[str, list]] = {}
    for index, image in enumerate(images):
        views = by_size.setdefault(sizes[index], {key: [] for key in ("views", "masks", "index", "flipped", "crops",
                                                                      "sizes")})
        origins = [(0.5, 0.5)] if crop == "center" else [(crop_rng.random(), crop_rng.random()) for _ in range(crop_variants)]
        for origin in origins:
            cropped, top_left = crop_and_resize(image, sizes[index], origin)
            mask = None
            if masks is not None:
                mask = masks[index] if masks[index] is not None else Image.new("L", image.size, 255)
                mask = crop_and_resize(mask, sizes[index], origin, Image.Resampling.BILINEAR)[0]
            for is_flipped in ([False, True] if flip else [False]):
                views["views"].append(ImageOps.mirror(cropped) if is_flipped else cropped)
                views["masks"].append(ImageOps.mirror(mask) if mask is not None and is_flipped else mask)
                views["index"].append(index)
                views["flipped"].append(is_flipped)
                views["crops"].append(top_left)
                views["sizes"].append((image.height, image.width))
    return [encode_views(vae, by_size[size], size, device, dtype, refine_steps) for size in sorted(by_size)]


def encode_views(vae, views: dict[str, list], size: tuple[int, int], device: torch.device,
                 dtype: torch.dtype, refine_steps: int = 0) -> LatentCache:
    """One size's cut pictures through the VAE, as many at a time as `ENCODE_PIXELS` allows (one at 1024 px,
    eight at most); their masks down to the latent grid."""
    means, stds = [], []
    per_batch = max(1, min(8, ENCODE_PIXELS // (size[0] * size[1])))
    for start in range(0, len(views["views"]), per_batch):
        batch = to_tensor(views["views"][start:start + per_batch]).to(device=device, dtype=dtype)
        distribution = vae.encode(batch).latent_dist
        mean = decoder_inversion(vae, batch, distribution.mean, refine_steps) if refine_steps else distribution.mean
        means.append(mean.float().cpu())
        stds.append(distribution.std.float().cpu())
    # Contiguous: torch.cat of the distribution's channel slices comes out channels-last, and every training
    # step is then slower (benchmarks/results/step_overhead.md).
    means, stds = torch.cat(means).contiguous(), torch.cat(stds).contiguous()
    masks = None
    if views["masks"][0] is not None:
        pixels = torch.stack([torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255) for mask in views["masks"]])
        masks = F.adaptive_avg_pool2d(pixels.unsqueeze(1), means.shape[-2:]).contiguous()  # [entries, 1, h, w]
    width, height = size
    return LatentCache(means, stds, views["index"], views["flipped"], views["crops"], views["sizes"], (height, width),
                       masks)


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
    masks: list[Image.Image | None]  # per image: where the subject is ("L", white), or None
    caches: list[LatentCache] | None = None  # every picture's VAE latents (crops, flips), one cache per bucket
    class_caches: list[LatentCache] | None = None  # prior preservation: the class images at each bucket's size


def read_training_data(folder: str | Path, token: str, property_kind: str) -> TrainingData:
    """The pictures in `folder`, their captions and masks; UserError naming a file that cannot be used."""
    image_paths = list_images(folder)
    pictures = [load_picture(path) for path in image_paths]
    masks = [read_mask(path, image, alpha) for path, (image, alpha) in zip(image_paths, pictures, strict=True)]
    return TrainingData(image_paths, [image for image, _ in pictures], make_captions(image_paths, token, property_kind),
                        masks)


@dataclass
class Batch:
    """This process's share of one step's examples: the subject's pictures first, then as many class images."""

    latents: torch.Tensor  # [B, C, h, w], scaled for the UNet
    noise: torch.Tensor  # [B, C, h, w]
    timesteps: torch.Tensor  # [B]
    prompts: list[str]
    sizes: list[tuple]  # SDXL's (original height, width, crop top, left, target height, width) per example
    subject_count: int  # the first rows; the rest are class images (prior preservation)
    masks: torch.Tensor | None = None  # [B, 1, h, w] where the subject is (0..1); None: everywhere


def draw_batch(data: TrainingData, batch_size: int, class_prompt: str | None, source: torch.Generator,
               num_train_timesteps: int, scaling_factor: float, process: int, processes: int,
               shift_factor: float = 0.0, stratified: bool = False,
               timestep_chances: torch.Tensor | None = None, antithetic: bool = False) -> Batch:
    """The global batch drawn from `source` (subject pictures, then class images); the rows of `process`.

    Every process draws the same global batch from the shared generator and trains on its share;
    averaged gradients then equal those of the global batch on one process. A batch comes from one bucket,
    picked with a chance proportional to how many entries it holds. `stratified`: see `draw_timesteps`;
    `timestep_chances` [num_train_timesteps] (from `timestep_bias`): each timestep's chance, None for uniform.
    `antithetic`: half of `batch_size` rows drawn, each then twice, the second time with its noise negated (see
    `antithetic_pairs`).
    """
    drawn = batch_size // 2 if antithetic else batch_size
    bucket = 0
    if len(data.caches) > 1:  # with one bucket no draw, so square-cropped runs draw what they always did
        counts = torch.tensor([len(cache.image_index) for cache in data.caches], dtype=torch.float64)
        bucket = int(torch.multinomial(counts, 1, generator=source))
    cache = data.caches[bucket]
    entries = torch.randint(len(cache.image_index), (drawn,), generator=source)
    latents = cache.sample(entries, source, scaling_factor, shift_factor)
    prompts = [pick(data.captions[cache.image_index[e]], source) for e in entries.tolist()]
    sizes = cache.size_conditions(entries)
    masks = cache.masks[entries] if cache.masks is not None else None
    if data.class_caches is not None:
        class_cache = data.class_caches[bucket]
        class_entries = torch.randint(len(class_cache.image_index), (drawn,), generator=source)
        latents = torch.cat([latents, class_cache.sample(class_entries, source, scaling_factor, shift_factor)])
        prompts += [class_prompt] * drawn
        sizes += class_cache.size_conditions(class_entries)
        if masks is not None:  # the class images count everywhere
            masks = torch.cat([masks, torch.ones_like(masks)])
    noise = torch.randn(latents.shape, generator=source)
    if timestep_chances is not None:
        timesteps = torch.cat([draw_biased_timesteps(drawn, timestep_chances, source, stratified)
                               for _ in range(len(latents) // drawn)])
    elif stratified:  # the subject's rows and the class images' rows each cover the whole schedule
        timesteps = torch.cat([draw_timesteps(drawn, num_train_timesteps, source)
                               for _ in range(len(latents) // drawn)])
    else:
        timesteps = torch.randint(0, num_train_timesteps, (len(latents),), generator=source)
    if antithetic:
        order, signs = antithetic_pairs(len(latents) // drawn, drawn)
        latents, noise, timesteps = latents[order], noise[order] * signs.view(-1, 1, 1, 1), timesteps[order]
        prompts, sizes = [prompts[i] for i in order], [sizes[i] for i in order]
        masks = masks[order] if masks is not None else None
    share = batch_size // processes
    rows = list(range(process * share, (process + 1) * share))
    if data.class_caches is not None:
        rows += [batch_size + row for row in rows]
    return Batch(latents[rows], noise[rows], timesteps[rows], [prompts[r] for r in rows], [sizes[r] for r in rows],
                 share, masks[rows] if masks is not None else None)


def antithetic_pairs(groups: int, drawn: int) -> tuple[list[int], torch.Tensor]:
    """Row order [2 * groups * drawn] and noise signs for antithetic noise: each group of `drawn` rows (the subject's,
    then the class images') followed by itself again, the copies' noise negated.

    A picture noised at one level with ε and with -ε: where the UNet's prediction is close to affine in its noise
    (as Jia et al. 2025 found a trained model's to be), the two errors' noise terms cancel in the gradient
    (antithetic variates). On miniworld's demo the token's gradient noise came mostly from which pictures and noise
    levels a batch draws, which the pairs halve, so it came out noisier, not less (benchmarks/results/gradient_noise.md)."""
    order = [group * drawn + row for group in range(groups) for _copy in range(2) for row in range(drawn)]
    signs = torch.tensor([1.0 - 2.0 * copy for _group in range(groups) for copy in range(2) for _row in range(drawn)])
    return order, signs


def draw_timesteps(count: int, num_train_timesteps: int, source: torch.Generator) -> torch.Tensor:
    """`count` timesteps [count], one drawn uniformly from each of `count` equal ranges of the schedule, in
    random order.

    Each batch then sees noisy and nearly clean pictures alike: the same expected loss as independent
    draws, with less variance from batch to batch (the stratified sampling of Kingma et al. 2021, VDM).
    """
    strata = torch.randperm(count, generator=source)
    return (strata * num_train_timesteps + torch.randint(0, num_train_timesteps, (count,), generator=source)) // count


def timestep_bias(num_train_timesteps: int, strategy: str, portion: float, multiplier: float, begin: int = 0,
                  end: int | None = None) -> torch.Tensor:
    """Each timestep's chance of being drawn [num_train_timesteps] (float64, summing to 1): the favoured ones
    `multiplier` times likelier than the rest, as diffusers' SDXL training scripts weight them
    (--timestep_bias_strategy). later: the noisiest `portion` of the schedule, where a picture's layout and
    coarse texture are decided; earlier: the cleanest `portion`, fine detail; range: begin..end-1.
    """
    chances = torch.ones(num_train_timesteps, dtype=torch.float64)
    favoured = max(1, round(portion * num_train_timesteps))
    span = {"later": slice(num_train_timesteps - favoured, None), "earlier": slice(0, favoured),
            "range": slice(begin, end)}[strategy]
    chances[span] *= multiplier
    return chances / chances.sum()


def draw_biased_timesteps(count: int, chances: torch.Tensor, source: torch.Generator,
                          stratified: bool = False) -> torch.Tensor:
    """`count` timesteps [count] drawn with `chances` [num_train_timesteps] by inverse-transform sampling:
    u in [0, 1) picks the first timestep whose cumulative chance passes u. `stratified`: one u from each of
    `count` equal ranges of [0, 1), in random order (each batch then spans the favoured and the other timesteps
    in proportion, as `draw_timesteps` spans the schedule)."""
    if stratified:
        strata = torch.randperm(count, generator=source)
        uniform = (strata + torch.rand(count, generator=source, dtype=torch.float64)) / count
    else:
        uniform = torch.rand(count, generator=source, dtype=torch.float64)
    cumulative = torch.cumsum(chances, 0)
    return torch.searchsorted(cumulative, uniform, right=True).clamp(max=len(chances) - 1)


def pick(options: list[str], generator: torch.Generator) -> str:
    """One of `options`, drawn from `generator`."""
    return options[int(torch.randint(len(options), (1,), generator=generator))]
