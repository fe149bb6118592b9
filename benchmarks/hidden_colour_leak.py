"""How often a miniworld model draws the hidden colour (teal) when the prompt names no colour.

    python -m benchmarks.hidden_colour_leak --models shipped runs/miniworld-hidden002/model [--per-prompt 8]

The demo's init-word baseline ("a circle" must come out teal on at most 0.2 of the pictures) checks that the
colour is hidden from the words. A model that fits its training data draws teal from a colourless prompt as often
as its data shows teal under a caption with no colour word (`build.hidden_share`: 30 % at the build's default
share of teal scenes), so a better-fitted model can fail that baseline without any change to the words. The demo
reads 16 pictures; this reads many more, on every base shape: "a <shape>" (the demo's init-word form) and "a
<size> <shape> on a <background> background", each --per-prompt times, judged by the miniworld judge.
Written to benchmarks/results/hidden_colour_leak.md (or --results-suffix).
"""

from __future__ import annotations

import itertools
import os

import torch

from .common import RESULTS_DIR, argument_parser, command, machine, print_and_write, weights_fingerprint


def colourless_prompts() -> dict[str, list[str]]:
    """{form: prompts}, no prompt naming a colour."""
    from textual_inversion.miniworld.world import BACKGROUNDS, BASE_SHAPES, SIZES

    def article(words: str) -> str:
        return "an" if words[0] in "aeiou" else "a"

    return {"a <shape>": [f"{article(s)} {s}" for s in BASE_SHAPES],
            "a <size> <shape> on a <background> background": [
                f"a {size} {shape} on {article(bg)} {bg} background"
                for shape, size, bg in itertools.product(BASE_SHAPES, SIZES, BACKGROUNDS)]}


def teal_share(pipe, judge, prompts: list[str], per_prompt: int, seed: int) -> tuple[float, int]:
    """(share of the pictures the judge reads as the hidden colour, how many pictures), DDIM 25, guidance 4 as
    the demo's evaluation samples."""
    from textual_inversion.miniworld.judge import predict
    from textual_inversion.miniworld.world import HIDDEN_COLOUR

    generator = torch.Generator().manual_seed(seed)
    images = []
    for i in range(0, len(prompts), 8):
        images += pipe(prompts[i : i + 8], num_inference_steps=25, guidance_scale=4.0,
                       num_images_per_prompt=per_prompt, generator=generator).images
    colours = [p["colour"] for p in predict(images, judge)]
    return colours.count(HIDDEN_COLOUR) / len(colours), len(colours)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=["shipped"],
                        help="miniworld pipeline folders; 'shipped' is the packaged model")
    parser.add_argument("--per-prompt", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results-suffix", default="")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from diffusers import StableDiffusionPipeline

    from textual_inversion.miniworld import model_path
    from textual_inversion.miniworld.judge import load_judge

    judge = load_judge()
    forms = colourless_prompts()
    rows = []
    for model in args.models:
        folder = model_path() if model == "shipped" else model
        pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None)
        pipe.set_progress_bar_config(disable=True)
        shares = {form: teal_share(pipe, judge, prompts, args.per_prompt, args.seed) for form, prompts in forms.items()}
        rows.append((model, weights_fingerprint(folder), shares))
        print(rows[-1], flush=True)

    lines = [f"# How often miniworld draws the hidden colour from a prompt naming no colour ({machine('cpu', args.threads)})",
             "", f"Produced by `{command()}`. Each prompt {args.per_prompt} pictures (DDIM 25, guidance 4, seed "
             f"{args.seed}), read by the miniworld judge. The demo's init-word target: at most 0.2 on \"a circle\".",
             "", "| model | weights | " + " | ".join(f"teal share, \"{form}\" (pictures)" for form in forms) + " |",
             "|---|---|" + "---|" * len(forms)]
    for model, fingerprint, shares in rows:
        lines.append(f"| {model} | {fingerprint} | "
                     + " | ".join(f"{share:.3f} ({n})" for share, n in shares.values()) + " |")
    lines += ["", f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."]
    print_and_write(lines, RESULTS_DIR / f"hidden_colour_leak{args.results_suffix}.md")


if __name__ == "__main__":
    main()
