"""Does miniworld's text choose the pattern, or the noise? Every pattern word under the same seeds, read by the judge.

    python -m benchmarks.pattern_binding [--models DIR ...] [--images 3]

For every base shape and size (a named colour and a background drawn once per pair), each pattern word is asked
for with the same seeds. Where the word chooses the pattern, the judge reads the word; where the noise chooses it,
one seed gives the same pattern whatever the word says. Writes benchmarks/results/pattern_binding.md: per model,
what the judge reads for each word, and for each pair of words how often one seed gave the same pattern under both.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter

import torch

from .common import RESULTS_DIR, argument_parser, command, print_and_write

PATTERNS = ("solid", "striped", "dotted", "checkered")


def scene_prompts(seed: int = 11) -> list[tuple[str, str, str, str]]:
    """(shape, size, colour, background) for every base shape and size; colour and background drawn once each."""
    from textual_inversion.miniworld.world import BACKGROUNDS, BASE_SHAPES, NAMED_COLOURS, SIZES

    rng = random.Random(seed)
    return [(shape, size, rng.choice(NAMED_COLOURS), rng.choice(BACKGROUNDS))
            for shape, size in itertools.product(BASE_SHAPES, SIZES)]


def pattern_reads(pipe, judge, images_per_word: int, steps: int = 25, guidance: float = 4.0) -> list[dict[str, str]]:
    """For every scene and seed: {pattern word: the pattern the judge read}, the words sharing the seed's noise."""
    from textual_inversion.miniworld.judge import predict

    reads = []
    for index, (shape, size, colour, background) in enumerate(scene_prompts()):
        prompts = [f"a {size} {colour} {word} {shape} on a {background} background" for word in PATTERNS]
        seeds = [1000 + index * images_per_word + i for i in range(images_per_word)]
        generators = [torch.Generator().manual_seed(s) for _ in PATTERNS for s in seeds]
        images = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance,
                      num_images_per_prompt=images_per_word, generator=generators).images
        patterns = [p["pattern"] for p in predict(images, judge)]
        for i in range(images_per_word):
            reads.append({word: patterns[w * images_per_word + i] for w, word in enumerate(PATTERNS)})
    return reads


def report_lines(name: str, reads: list[dict[str, str]]) -> list[str]:
    """Two tables for one model: the judge's reads per word, and how often a seed's pattern ignored the word."""
    lines = [f"## {name}", "", "| word | " + " | ".join(f"read {p}" for p in PATTERNS) + " | reads the word |",
             "|---|" + "---|" * (len(PATTERNS) + 1)]
    for word in PATTERNS:
        counts = Counter(r[word] for r in reads)
        cells = " | ".join(str(counts[p]) for p in PATTERNS)
        lines.append(f"| {word} | {cells} | {100 * counts[word] / len(reads):.0f} % |")
    pairs = list(itertools.combinations(PATTERNS, 2))
    lines += ["", "Same pattern read from one seed under both words (the noise chose, not the word):", "",
              "| " + " | ".join(f"{a} / {b}" for a, b in pairs) + " |", "|" + "---|" * len(pairs),
              "| " + " | ".join(f"{100 * sum(r[a] == r[b] for r in reads) / len(reads):.0f} %" for a, b in pairs)
              + " |", ""]
    return lines


def main() -> None:
    from diffusers import StableDiffusionPipeline

    from textual_inversion.miniworld import model_path
    from textual_inversion.miniworld.judge import load_judge

    parser = argument_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=[str(model_path())],
                        help="miniworld pipeline folders (default: the shipped one)")
    parser.add_argument("--images", type=int, default=3, help="seeds per scene; each seed is drawn under every word")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(RESULTS_DIR / "pattern_binding.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    judge = load_judge()
    n = len(scene_prompts()) * args.images
    lines = [f"# Does the pattern word choose the pattern? ({n} seeds per word, the same seeds for every word)", "",
             f"Produced by `{command()}`. Every base shape at both sizes, a named colour and a background drawn once "
             "for each, DDIM 25 steps, guidance 4; the judge reads the pattern of every image.", ""]
    for folder in args.models:
        pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32, safety_checker=None)
        pipe.set_progress_bar_config(disable=True)
        name = "shipped miniworld" if folder == str(model_path()) else f"`{folder}`"
        lines += report_lines(name, pattern_reads(pipe, judge, args.images))
    print_and_write(lines, args.output)


if __name__ == "__main__":
    main()
