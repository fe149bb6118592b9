"""Which of several runs of one concept draws its training pictures best, with no judge and no download.

A user's own subject has no ground-truth judge, but it has its pictures and their captions. Each run draws
`num_images` pictures of every training picture's caption (its token in place), and each is compared with the
training picture of that caption: the relative distance of Gram matrices of the model's own VAE encoder's input
convolution features (channel x channel, as style transfer compares textures; Gatys et al. 2016), which hold colour
and fine texture and not position, and which every latent diffusion model can compute. The caption fixes the
background and the other words alike, so what differs between runs is what the token draws. The run with the
smallest geometric mean distance is the nearest.

On miniworld, between `--steps 3200` and the stripes' bias, it kept a run the judge puts at the targets in 47 of 48
concept-seed pairs, 48 of 48 on another draw of its pictures (benchmarks/results/pick_by_likeness*.md); the miss is
the red checkered cross, where the two runs differ in a small area's pattern. On a new checkered subject it kept the
bias's striped run over a checkered one whose colour was paler: Gram matrices weigh a shade more than whether the
pattern is checks or stripes. Drawn from the paper's templates
instead and compared with the nearest training picture (when it compared the encoder's down blocks), it picked wrong
on 4 of the 7 pairs it was designed on (docs/subjects.md), so it needs caption files.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps

from .errors import UserError

logger = logging.getLogger(__name__)

SEED = 9000  # the first picture's seed; evaluation seeds 0-5000 draw below 5000 + 4 x their prompts
GRID_FILE = "pick.png"  # in each run folder: a row per training picture, the picture then what the run drew


def gram_matrices(vae, pixels: torch.Tensor) -> list[torch.Tensor]:
    """Gram matrices [B, C, C] of the VAE encoder's input convolution features, for `pixels` [B, 3, H, W] in
    [-1, 1], divided by H x W; a list of the layers compared (one), as `gram_distance` takes them.

    At the picture's full size a pattern a few pixels wide is still there: compared after the first two down blocks
    instead, the pick kept the red checkered cross's run that draws its checks faint on 4 of 4 pairs of one draw
    (benchmarks/results/pick_feature_layers*.md)."""
    return [gram_matrix(vae.encoder.conv_in(pixels.to(vae.device, vae.dtype)))]


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """[B, C, C] for a feature map [B, C, H, W]: channel x channel products summed over positions, divided by H x W
    (so that maps of other sizes compare)."""
    flat = features.float().flatten(2)  # [B, C, H x W]
    return flat @ flat.transpose(1, 2) / flat.shape[-1]


def gram_distance(generated: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
    """[B]: per generated picture, the mean over layers of |G - G_ref|_F / |G_ref|_F. `reference` holds one
    picture's Gram matrices [1, C, C] (compared with every generated one) or one per generated picture."""
    per_layer = []
    for gram, ref in zip(generated, reference, strict=True):
        ref = ref.expand_as(gram)
        per_layer.append((gram - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1))
    return torch.stack(per_layer).mean(dim=0)


def geometric_mean(distances: list[float]) -> float:
    """The mean that weighs each picture by its ratio: a picture's distance scales with its background (grey lies
    near the VAE's zero, so its Gram matrices are small), and the arithmetic mean let one background decide."""
    return math.exp(statistics.mean(math.log(max(d, 1e-12)) for d in distances))


@dataclass
class RunLikeness:
    run: Path
    distance: float  # geometric mean over every drawn picture; smaller: more like the training pictures
    pictures: int
    grid: Path | None  # the pictures it was measured on (GRID_FILE); None where the run folder took no file


def run_settings(run: Path) -> dict:
    """The training config of a finished run folder (its run.json); UserError saying what is missing."""
    from .rundir import RUN_FILE, read_run_file, require_finished

    record = read_run_file(run)
    if record is None or "config" not in record:
        raise UserError(f"{run}: no readable {RUN_FILE}; give run folders that `train` wrote")
    require_finished(run, record.get("status"))
    return record["config"]


def require_captions(folder: str | Path) -> None:
    """UserError naming the first training picture in `folder` without its caption file: pick draws the captions."""
    from .data import list_images

    for path in list_images(folder):
        if not path.with_suffix(".txt").is_file():
            raise UserError(f"{path}: no caption file; pick draws each training picture's caption, so write "
                            f"{path.with_suffix('.txt').name}, e.g. 'a photo of {{token}} on a beach'")


@torch.no_grad()
def run_likeness(run: Path, num_images: int = 4, seed: int = SEED, steps: int = 25, guidance: float = 4.0,
                 device: str = "auto") -> RunLikeness:
    """How like its training pictures a finished run draws them (see the module's docstring); `steps` and `guidance`
    as `evaluate` samples."""
    from .concepts import load_concepts, pipeline_of, read_concept
    from .data import read_training_data
    from .evaluate import prompt_generators
    from .generation import save_grid
    from .images import to_tensor
    from .models import load_pipeline, pick_device

    settings = run_settings(run)
    require_captions(settings["images"])
    concept = read_concept(run)
    pipe = load_pipeline(pipeline_of([concept]) or settings["model"], settings.get("model_config"))
    pipe = pipe.to(pick_device(device))
    pipe.set_progress_bar_config(disable=True)
    tokens = load_concepts(pipe, [concept])
    if not tokens:
        raise UserError(f"{run}: defines no token to draw")
    data = read_training_data(settings["images"], tokens[0], settings.get("property", "object"))
    distances, rows = [], []
    for index, (picture, captions) in enumerate(zip(data.images, data.captions, strict=True)):
        drawn = pipe(captions[0], num_inference_steps=steps, guidance_scale=guidance, num_images_per_prompt=num_images,
                     generator=prompt_generators(seed, index, num_images)).images
        reference = ImageOps.fit(picture, drawn[0].size, Image.BICUBIC)
        rows += [reference, *drawn]
        distances.extend(gram_distance(gram_matrices(pipe.vae, to_tensor(drawn)),
                                       gram_matrices(pipe.vae, to_tensor([reference]))).tolist())
    grid = Path(run) / GRID_FILE
    try:
        save_grid(rows, grid, columns=num_images + 1)
    except OSError as error:  # a read-only run (another's, a mounted copy) still gets its distance
        logger.warning("%s: not written (%s); the distance does not need it", grid, error.strerror or error)
        grid = None
    return RunLikeness(Path(run), geometric_mean(distances), len(distances), grid)


def rank_runs(runs: list[Path], num_images: int = 4, seed: int = SEED, steps: int = 25, guidance: float = 4.0,
              device: str = "auto") -> list[RunLikeness]:
    """`runs` (finished runs of one concept: the same training pictures) nearest first; the rest as `run_likeness`."""
    if len(runs) < 2:
        raise UserError("pick: give two or more run folders to choose between")
    for name, value in (("--num-images", num_images), ("--steps", steps)):
        if value < 1:
            raise UserError(f"{name} {value}: must be 1 or more")
    folders = {run: Path(run_settings(run)["images"]).resolve() for run in runs}
    if len(set(folders.values())) > 1:
        learned = "; ".join(f"{run} from {folder}" for run, folder in folders.items())
        raise UserError(f"pick compares runs of one concept, learned from the same pictures: {learned}")
    return sorted((run_likeness(Path(run), num_images, seed, steps, guidance, device) for run in runs),
                  key=lambda r: r.distance)


# On miniworld every wrong pick measured had the runner-up less than this much farther (relative), with either layer
# the pick has compared; how many were wrong is in the "close:" line `pick` prints (benchmarks/results/pick_*.md).
CLOSE_MARGIN = 0.2


def close_call(distances: list[float]) -> float | None:
    """How much farther the runner-up is than the nearest of `distances` (sorted nearest first; 0.05: 5 %), when
    that is under CLOSE_MARGIN; else None."""
    margin = distances[1] / distances[0] - 1
    return margin if margin < CLOSE_MARGIN else None
