"""Does miniworld's VAE keep the patterns? Renders of each pattern and size, encoded and decoded, read by the judge.

    python -m benchmarks.vae_patterns [--model DIR] [--scenes 48]

If the judge reads a pattern on the clean renders but not after the VAE's round trip, no UNet could draw it
through this latent space; if it reads it in both, the UNet (or its conditioning) is what loses it. Writes
benchmarks/results/vae_patterns.md: per pattern and size, the share of images whose shape, colour and pattern
the judge reads right, before and after.
"""

from __future__ import annotations

import random

import torch

from .common import RESULTS_DIR, argument_parser, command, print_and_write

PATTERNS = ("solid", "striped", "dotted", "checkered")
SIZES = ("small", "big")


def round_trip(vae, images: list, refine_steps: tuple[int, ...] = (0,)) -> list[list]:
    """The images encoded once to the latent mean and decoded again as PIL images, once for each entry of
    `refine_steps`: the mean refined by that many steps of decoder inversion first (0: as the encoder gave it)."""
    from diffusers.image_processor import VaeImageProcessor

    from textual_inversion.data import decoder_inversion
    from textual_inversion.images import to_tensor

    pixels = to_tensor(images)
    trips = []
    with torch.no_grad():
        means = vae.encode(pixels).latent_dist.mean
        for steps in refine_steps:
            latents = decoder_inversion(vae, pixels, means, steps) if steps else means
            trips.append(VaeImageProcessor().postprocess(vae.decode(latents).sample, output_type="pil"))
    return trips


def main() -> None:
    from diffusers import AutoencoderKL

    from textual_inversion.miniworld import model_path
    from textual_inversion.miniworld.judge import load_judge, predict
    from textual_inversion.miniworld.world import BASE_SHAPES, random_scene, render

    parser = argument_parser(__doc__)
    parser.add_argument("--model", default=str(model_path()), help="a miniworld pipeline folder (default: the shipped one)")
    parser.add_argument("--scenes", type=int, default=48, help="renders per pattern and size")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vae = AutoencoderKL.from_pretrained(args.model, subfolder="vae", torch_dtype=torch.float32).eval()
    judge = load_judge()
    rng = random.Random(777)
    lines = [f"# miniworld's VAE and the patterns ({args.scenes} renders per row)", "",
             f"Produced by `{command()}`. Share of renders (base shapes, every colour and background) whose shape, "
             "colour and pattern the judge reads right, as rendered and after the VAE's encode-decode round trip.",
             "", "| pattern | size | rendered | after the VAE |", "|---|---|---|---|"]
    for pattern in PATTERNS:
        for size in SIZES:
            scenes = [random_scene(rng, shapes=BASE_SHAPES, patterns=(pattern,), sizes=(size,))
                      for _ in range(args.scenes)]
            rendered = [render(scene) for scene in scenes]
            rates = []
            for images in (rendered, *round_trip(vae, rendered)):
                reads = predict(images, judge)
                rates.append(sum(read["shape"] == scene.shape and read["colour"] == scene.colour
                                 and read["pattern"] == scene.pattern for read, scene in zip(reads, scenes, strict=True))
                             / len(scenes))
            lines.append(f"| {pattern} | {size} | {100 * rates[0]:.0f} % | {100 * rates[1]:.0f} % |")
    print_and_write(lines, RESULTS_DIR / "vae_patterns.md")


if __name__ == "__main__":
    main()
