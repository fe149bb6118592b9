"""How `textual-inversion pick` came to its design: which prompts to draw and how to average the distances.

For pairs of sweep runs of one concept and seed (the first candidate and the second), every run draws 4 pictures of
each training caption (compared with that caption's picture) and 4 of one of the paper's templates per training
picture in turn (compared with the nearest training picture), with the same seeds. Per pair it prints which run each
variant picks: captions or templates, the arithmetic or the geometric mean of the per-picture Gram distances, and
the share of pictures where the first run is the nearer; beside them the judge's reading of each run. Its results
file was measured when the pick compared the encoder's first two down blocks; it compares what `pick` compares
(likeness.gram_matrices), the input convolution since benchmarks/pick_feature_layers.py.

    python -m benchmarks.likeness_variants --workdir runs/seeds23 --concepts striped-style --seeds 2 3 \
        --candidates ti-average-12800 ti-average-noisiest-3200
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from .common import RESULTS_DIR, command, print_and_write
from .concept_sweep import at_target
from .pick_by_likeness import judged, pair_parser, sweep_pairs


@torch.no_grad()
def picture_distances(run: Path, num_images: int, seed: int) -> dict[str, list[float]]:
    """{captions, templates}: per drawn picture, its Gram distance to its caption's picture or to the nearest
    training picture."""
    from textual_inversion.concepts import load_concepts, read_concept
    from textual_inversion.data import read_training_data
    from textual_inversion.evaluate import prompt_generators
    from textual_inversion.images import to_tensor
    from textual_inversion.likeness import gram_distance, gram_matrices, run_settings
    from textual_inversion.models import load_pipeline
    from textual_inversion.templates import TEMPLATES

    settings = run_settings(run)
    pipe = load_pipeline(settings["model"])
    pipe.set_progress_bar_config(disable=True)
    token = load_concepts(pipe, [read_concept(run)])[0]
    data = read_training_data(settings["images"], token, settings["property"])
    templates = [template.format(token) for template in TEMPLATES[settings["property"]]]
    references = [gram_matrices(pipe.vae, to_tensor([picture])) for picture in data.images]
    distances = {"captions": [], "templates": []}
    for index, captions in enumerate(data.captions):
        for kind, prompt in (("captions", captions[0]), ("templates", templates[index % len(templates)])):
            drawn = pipe(prompt, num_inference_steps=25, guidance_scale=4.0, num_images_per_prompt=num_images,
                         generator=prompt_generators(seed, index, num_images)).images
            grams = gram_matrices(pipe.vae, to_tensor(drawn))
            if kind == "captions":
                distances[kind] += gram_distance(grams, references[index]).tolist()
            else:
                nearest = torch.stack([gram_distance(grams, reference) for reference in references]).min(dim=0)
                distances[kind] += nearest.values.tolist()
    return distances


def main() -> None:
    from textual_inversion.likeness import SEED, geometric_mean
    from textual_inversion.models import use_threads

    args = pair_parser(__doc__, RESULTS_DIR / "likeness_variants.md").parse_args()
    use_threads(args.threads)
    first, second = args.candidates
    lines = [f"# Which runs the variants of the likeness pick: {first} or {second}", "",
             f"Produced by `{command()}`. Each cell: the distances of {first} / {second}, then the run picked "
             f"(1: {first}, 2: {second}); \"nearer\": of the pictures drawn with the same seed and prompt for both, "
             f"how many {first}'s is nearer. Judge: fidelity / editability of each run, * at the targets.", "",
             "| concept | seed | judge | captions, arithmetic | captions, geometric | captions, nearer | "
             "templates, arithmetic | templates, geometric | templates, nearer |", "|---|---|---|---|---|---|---|---|---|"]
    for concept, seed, pair in sweep_pairs(args):
        runs = list(pair.values())
        distances = [picture_distances(run, args.num_images, SEED) for run in runs]
        scores = [judged(run) for run in runs]
        cells = ["; ".join(f"{s['fidelity']:.2f} / {s['editability']:.2f}{'*' if at_target(s) else ''}"
                            for s in scores)]
        for kind in ("captions", "templates"):
            for average in (statistics.mean, geometric_mean):
                a, b = (average(d[kind]) for d in distances)
                cells.append(f"{a:.4f} / {b:.4f}: {1 if a < b else 2}")
            pairs = list(zip(distances[0][kind], distances[1][kind], strict=True))
            cells.append(f"{sum(a < b for a, b in pairs)} of {len(pairs)}")
        lines.append(f"| {concept} | {seed} | {' | '.join(cells)} |")
        print(lines[-1], flush=True)
    print_and_write(lines, Path(args.output))


if __name__ == "__main__":
    main()
