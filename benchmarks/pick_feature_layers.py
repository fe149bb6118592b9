"""Which VAE encoder features should `textual-inversion pick` compare? Compared after the encoder's first two down
blocks (at 1/2 and 1/4 of the picture's side), its misses on miniworld were mostly the red checkered cross, whose two
runs draw the same red cross and differ in how clearly it is checkered, a pattern of a few pixels. This reads the
pictures each run already drew for the pick (its pick.png: a row per training picture, the picture then what the run
drew) and ranks the two runs of every pair again with Gram matrices of four layer sets: those two blocks, the input
convolution at the picture's full size (which sees a few-pixel pattern before any downsampling; the pick's since
this comparison), both, and the three down blocks. No drawing: the same pictures under every layer set.

    python -m benchmarks.pick_feature_layers --workdir runs/seeds01 --concepts red-checkered-cross \
        --seeds 0 1 --candidates ti-average-12800 ti-average-noisiest-3200
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from .common import RESULTS_DIR, command, print_and_write
from .concept_sweep import at_target
from .pick_by_likeness import judged, pair_parser, sweep_pairs, tally

# Feature maps by index: 0 the input convolution (full size), 1-3 the down blocks (1/2, 1/4, 1/4).
LAYER_SETS = {"blocks 1-2 (the pick's before)": (1, 2), "input conv + blocks 1-2": (0, 1, 2),
              "input conv (the pick's now)": (0,), "blocks 1-3": (1, 2, 3)}


def encoder_grams(vae, pixels: torch.Tensor) -> list[torch.Tensor]:
    """Gram matrices [B, C, C] (likeness.gram_matrix) of every feature map LAYER_SETS indexes, for `pixels`
    [B, 3, H, W] in [-1, 1]."""
    from textual_inversion.likeness import gram_matrix

    features = vae.encoder.conv_in(pixels.to(vae.device, vae.dtype))
    maps = [features]
    for block in vae.encoder.down_blocks:
        features = block(features)
        maps.append(features)
    return [gram_matrix(feature_map) for feature_map in maps]


def grid_rows(grid: Path, columns: int) -> list[list[Image.Image]]:
    """pick.png cut into its rows of square pictures: [training picture, drawn 1, ..., drawn columns - 1]."""
    image = Image.open(grid).convert("RGB")
    side = image.width // columns
    return [[image.crop((c * side, r * side, (c + 1) * side, (r + 1) * side)) for c in range(columns)]
            for r in range(image.height // side)]


@torch.no_grad()
def distances_by_layer_set(vae, grid: Path, columns: int) -> dict[str, float]:
    """Per LAYER_SETS name, the pick's distance (geometric mean over drawn pictures of the mean relative Gram
    distance over the set's layers) of the pictures in `grid`."""
    from textual_inversion.images import to_tensor
    from textual_inversion.likeness import geometric_mean, gram_distance

    per_set: dict[str, list[float]] = {name: [] for name in LAYER_SETS}
    for row in grid_rows(grid, columns):
        drawn, reference = encoder_grams(vae, to_tensor(row[1:])), encoder_grams(vae, to_tensor(row[:1]))
        for name, layers in LAYER_SETS.items():
            per_set[name] += gram_distance([drawn[i] for i in layers], [reference[i] for i in layers]).tolist()
    return {name: geometric_mean(values) for name, values in per_set.items()}


def main() -> None:
    from textual_inversion.likeness import CLOSE_MARGIN, GRID_FILE
    from textual_inversion.models import load_pipeline, use_threads

    parser = pair_parser(__doc__, RESULTS_DIR / "pick_feature_layers.md")
    args = parser.parse_args()
    use_threads(args.threads)
    vae = load_pipeline("miniworld").vae.eval()
    first, second = args.candidates
    lines = [f"# Which features the pick compares: {first} or {second}, on the pictures each run drew for it", "",
             f"Produced by `{command()}`. Each run's {GRID_FILE} (the pictures its last pick drew, {args.num_images} "
             "a training caption) compared with the training pictures by Gram matrices of each layer set; the nearer "
             "run is picked. At the targets: the judge's fidelity >= 0.8 with editability >= 0.7 (the run's sweep "
             "evaluation).", "",
             "| concept | seed | at the targets | " + " | ".join(f"{name}: {first} / {second}" for name in LAYER_SETS)
             + " |", "|---|---|---|" + "---|" * len(LAYER_SETS)]
    pairs: dict[str, list[dict]] = {name: [] for name in LAYER_SETS}
    for concept, seed, runs in sweep_pairs(args):
        grids = {name: run / GRID_FILE for name, run in runs.items()}
        missing = [str(grid) for grid in grids.values() if not grid.is_file()]
        if missing:
            print(f"skipped {concept} seed {seed}: no {', '.join(missing)}; run the pick on it first", flush=True)
            continue
        readings = {name: judged(run) for name, run in runs.items()}
        measured = {name: distances_by_layer_set(vae, grid, args.num_images + 1) for name, grid in grids.items()}
        cells = []
        for set_name in LAYER_SETS:
            row = {name: {"distance": measured[name][set_name], **readings[name]} for name in runs}
            pairs[set_name].append(row)
            pick = min(row, key=lambda name: row[name]["distance"])
            cells.append(f"{row[first]['distance']:.4f} / {row[second]['distance']:.4f}"
                         f"{'' if at_target(row[pick]) else ' (miss)'}")
        hits = " / ".join("yes" if at_target(readings[name]) else "no" for name in runs)
        lines.append(f"| {concept} | {seed} | {hits} | {' | '.join(cells)} |")
        print(lines[-1], flush=True)
    lines += ["", "| layer set | pairs | pick at the targets | the better of the two | split pairs picked right | close "
              f"(runner-up under {CLOSE_MARGIN:.0%} farther): picks, wrong | wider: picks, wrong |", "|---|---|---|---|---|---|---|"]
    for set_name, rows in pairs.items():
        counts = tally(rows)
        lines.append(f"| {set_name} | {counts['pairs']} | {counts['pick']} | {counts['either']} | "
                     f"{counts['split_right']} of {counts['split']} | {counts['close']}, {counts['close_wrong']} | "
                     f"{counts['pairs'] - counts['close']}, {counts['wide_wrong']} |")
    print_and_write(lines, Path(args.output))


if __name__ == "__main__":
    main()
