"""Can the base model draw one kind of picture in every named colour on every background? Plain-word prompts read
by the judge.

A concept's edit prompt can only be honoured where the base model draws the scene it asks for: every method missed
"a <teal-striped-triangle> on a navy background" (the concept's navy picture is a small triangle) in every run.
This draws "a {size} {colour} {pattern} {shape} on a {background} background" for every named colour and background,
the same seeds for every cell, and counts the pictures the judge reads as asked (shape, colour, pattern, background
and size all right), with what the misses were read as.

    python -m benchmarks.scene_grid [--shape triangle] [--size small] [--pattern striped] [--images 8]
"""

from __future__ import annotations

from collections import Counter

import torch

from .common import RESULTS_DIR, argument_parser, command, print_and_write


def scene_reads(pipe, judge, scene: dict[str, str], images: int, steps: int = 25,
                guidance: float = 4.0) -> list[dict[str, str]]:
    """The judge's reading of `images` pictures of `scene` (shape, colour, pattern, size, background), seeds 0..N-1."""
    from textual_inversion.miniworld.judge import predict

    prompt = (f"a {scene['size']} {scene['colour']} {scene['pattern']} {scene['shape']} "
              f"on a {scene['background']} background")
    generators = [torch.Generator().manual_seed(seed) for seed in range(images)]
    pictures = pipe([prompt], num_inference_steps=steps, guidance_scale=guidance, num_images_per_prompt=images,
                    generator=generators).images
    return predict(pictures, judge)


def read_as_asked(scene: dict[str, str], reads: list[dict[str, str]]) -> int:
    """How many of the judge's `reads` have every attribute of `scene`."""
    return sum(all(read[k] == v for k, v in scene.items()) for read in reads)


def cell(scene: dict[str, str], reads: list[dict[str, str]]) -> str:
    """'5 of 8 (blob 3, purple 2)': pictures read as asked, and the commonest wrong readings among the others."""
    right = read_as_asked(scene, reads)
    wrong = Counter(read[k] for read in reads for k, v in scene.items() if read[k] != v)
    misses = ", ".join(f"{value} {count}" for value, count in wrong.most_common(2))
    return f"{right} of {len(reads)}" + (f" ({misses})" if misses else "")


def main() -> None:
    from textual_inversion.miniworld.judge import load_judge
    from textual_inversion.miniworld.world import BACKGROUNDS, BASE_SHAPES, NAMED_COLOURS, PATTERNS, SIZES
    from textual_inversion.models import load_pipeline, use_threads

    parser = argument_parser(__doc__)
    parser.add_argument("--shape", choices=BASE_SHAPES, default="triangle")
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--pattern", choices=PATTERNS, default="striped")
    parser.add_argument("--images", type=int, default=8, help="pictures per colour and background")
    parser.add_argument("--model", default="miniworld")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output",
                        help="the table's file (default benchmarks/results/scene_grid_<size>_<pattern>_<shape>.md)")
    args = parser.parse_args()
    use_threads(args.threads)
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    judge = load_judge()
    lines = [f"# The base model's {args.size} {args.pattern} {args.shape} in every named colour and background", "",
             f"Produced by `{command()}`. Pictures of \"a {args.size} <colour> {args.pattern} {args.shape} on a "
             f"<background> background\" (seeds 0-{args.images - 1}, DDIM 25 steps, guidance 4) that the judge reads "
             "with every attribute as asked; in brackets the commonest wrong readings.", "",
             "| colour | " + " | ".join(BACKGROUNDS) + " |", "|---|" + "---|" * len(BACKGROUNDS)]
    totals = Counter()
    for colour in NAMED_COLOURS:
        cells = []
        for background in BACKGROUNDS:
            scene = {"shape": args.shape, "colour": colour, "pattern": args.pattern, "size": args.size,
                     "background": background}
            reads = scene_reads(pipe, judge, scene, args.images)
            totals[background] += read_as_asked(scene, reads)
            cells.append(cell(scene, reads))
        lines.append(f"| {colour} | " + " | ".join(cells) + " |")
    lines.append("| every colour | " + " | ".join(
        f"{100 * totals[b] / (args.images * len(NAMED_COLOURS)):.0f} %" for b in BACKGROUNDS) + " |")
    output = args.output or RESULTS_DIR / f"scene_grid_{args.size}_{args.pattern}_{args.shape}.md"
    print_and_write(lines, output)


if __name__ == "__main__":
    main()
