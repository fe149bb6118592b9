"""Does miniworld's VAE keep the shapes? Renders of each shape, size and background, encoded and decoded, read by
the judge.

    python -m benchmarks.vae_shapes [--model DIR] [--judge DIR] [--scenes 24] [--shapes ...] [--sizes ...]
        [--refine STEPS] [--results-suffix _X]

A concept's training pictures reach the UNet as the VAE's latents, so a shape the round trip loses is a shape no
method can learn to draw from those pictures: the UNet would learn the latent the encoder gave, whose decoding has
lost it. Writes benchmarks/results/vae_shapes<suffix>.md: per shape and size, for each background, the share of
solid renders (every colour) whose shape the judge reads right after the round trip (every rendered one it reads
right), and how many it reads as no shape ("blob"). With --refine, the same after each latent was refined by that
many steps of decoder inversion (`train --refine-latents`), beside the encoder's.
"""

from __future__ import annotations

import random

import torch

from .common import RESULTS_DIR, argument_parser, command, print_and_write
from .vae_patterns import SIZES, round_trip


def main() -> None:
    from diffusers import AutoencoderKL

    from textual_inversion.miniworld import model_path
    from textual_inversion.miniworld.judge import JUDGE_DIR, NO_SHAPE, load_judge, predict
    from textual_inversion.miniworld.world import BACKGROUNDS, SHAPES, random_scene, render

    parser = argument_parser(__doc__)
    parser.add_argument("--model", default=str(model_path()), help="a miniworld pipeline folder (default: the shipped one)")
    parser.add_argument("--judge", default=str(JUDGE_DIR), help="a judge folder (default: the shipped one)")
    parser.add_argument("--scenes", type=int, default=24, help="renders per shape, size and background")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=list(SIZES))
    parser.add_argument("--refine", type=int, default=0, help="also decode latents refined by this many steps")
    parser.add_argument("--results-suffix", default="", help="write vae_shapes<suffix>.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vae = AutoencoderKL.from_pretrained(args.model, subfolder="vae", torch_dtype=torch.float32).eval()
    judge = load_judge(args.judge)
    rng = random.Random(778)
    lines = [f"# miniworld's VAE and the shapes ({args.scenes} solid renders per cell, every colour)", "",
             f"Produced by `{command()}`. Each cell: the share whose shape the judge reads right after the VAE's "
             "encode-decode round trip, and in brackets how many of them it reads as no shape (\"blob\"); the "
             "judge read the shape of every render right before the round trip unless a row says otherwise.", "",
             "| shape | size | " + " | ".join(BACKGROUNDS) + " |", "|---|---|" + "---|" * len(BACKGROUNDS)]
    if args.refine:
        lines[2] += (f" After the slash: from the latents refined by {args.refine} steps of decoder inversion "
                     "(`train --refine-latents`).")
    for shape in args.shapes:
        for size in args.sizes:
            cells, before = [], []
            for background in BACKGROUNDS:
                scenes = [random_scene(rng, shapes=(shape,), backgrounds=(background,), sizes=(size,),
                                       patterns=("solid",), hidden_colour_prob=1 / 9) for _ in range(args.scenes)]
                rendered = [render(scene) for scene in scenes]
                before.append(sum(read["shape"] == shape for read in predict(rendered, judge)))
                trips = round_trip(vae, rendered, (0, args.refine) if args.refine else (0,))
                reads = [predict(trip, judge) for trip in trips]
                cells.append(" / ".join(f"{100 * sum(r['shape'] == shape for r in read) / len(scenes):.0f} % "
                                        f"({sum(r['shape'] == NO_SHAPE for r in read)})" for read in reads))
            note = "" if sum(before) == args.scenes * len(BACKGROUNDS) else f" (rendered: {sum(before)} read right)"
            lines.append(f"| {shape}{note} | {size} | " + " | ".join(cells) + " |")
    print_and_write(lines, RESULTS_DIR / f"vae_shapes{args.results_suffix}.md")


if __name__ == "__main__":
    main()
