"""The ceiling of learning weights from the fits: predict held-out identities' LiDB weights from their TRUE
shape, colour and pattern by ridge regression on the pre-optimised fits, and score what they draw.

A hypernetwork trained on the fits' weight-space loss can do no better than a map that is told the answer's
attributes; if even this scores near zero on held-out identities, the fits, not the image encoder, are
what holds the prediction back.

    python -m benchmarks.hyperdreambooth_oracle --dataset runs/hyper-dataset-tok runs/hyper-dataset-kv
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch

from .common import RESULTS_DIR, argument_parser, command, print_and_write
from .hyperdreambooth_fit import score  # the same fidelity check

RESULTS = RESULTS_DIR / "hyperdreambooth_oracle.md"


def oracle_weights(dataset: Path, identities: list, ridge: float) -> tuple[int, list[dict], dict]:
    """(fits used, per identity {layer: (down, up)} predicted from its attributes, LiDB metadata)."""
    from textual_inversion.builds.hypernetwork.identities import all_identities
    from textual_inversion.methods.lidb_file import read_lidb
    from textual_inversion.methods.lidb_layers import canonical_factors
    from textual_inversion.outputs import LIDB, OUTPUT_FILES

    by_name = {identity.name: identity for identity in all_identities()}
    held = {identity.name for identity in identities}
    paths = [p for p in sorted(Path(dataset).glob(f"*/run/{OUTPUT_FILES[LIDB]}")) if p.parent.parent.name not in held]
    fits = canonical_factors([read_lidb(p)[0] for p in paths])
    metadata = read_lidb(paths[0])[1]
    names = list(fits[0])
    x = torch.tensor([by_name[p.parent.parent.name].one_hot() for p in paths])
    y = torch.stack([torch.cat([torch.cat(fit[n]) for n in names]) for fit in fits])
    solution = torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1]), x.T @ y)
    predictions = []
    for identity in identities:
        flat, out = torch.tensor(identity.one_hot()) @ solution, {}
        for name, (down, up) in zip(names, fits[0].values(), strict=True):
            out[name], flat = (flat[:len(down)], flat[len(down):len(down) + len(up)]), flat[len(down) + len(up):]
        predictions.append(out)
    return len(paths), predictions, metadata


def token_selectivity(dataset: Path, pipe) -> tuple[float, float]:
    """Mean norm of the fits' change to the cross-attention keys and values at the token's positions and at
    every other position of the training prompts: does an update change what the token says, or the prompt?"""
    from textual_inversion.methods.lidb_file import read_lidb
    from textual_inversion.methods.lidb_layers import aux_matrices, target_layers, token_states
    from textual_inversion.outputs import LIDB, OUTPUT_FILES
    from textual_inversion.templates import TEMPLATES

    paths = sorted(Path(dataset).glob(f"*/run/{OUTPUT_FILES[LIDB]}"))
    metadata = read_lidb(paths[0])[1]
    shapes = target_layers(pipe.unet, int(metadata["down_dim"]), int(metadata["up_dim"]), metadata["lidb_layers"])
    token = metadata.get("token", "sks")
    states, on_token = token_states(pipe, token, [template.format(token) for template in TEMPLATES["object"]])
    on_token_sum = other_sum = 0.0
    for path in paths:
        fit = read_lidb(path)[0]
        change = 0.0
        for index, shape in enumerate(shapes):
            down_aux, up_aux = aux_matrices(shape, int(metadata["seed"]), index)
            down, up = fit[shape.name]
            change = change + ((states @ down_aux.T @ down) * (up_aux @ up).norm()).square()  # (prompts, positions)
        norms = change.sqrt()
        on_token_sum += norms[on_token].mean().item()
        other_sum += norms[~on_token].mean().item()
    return on_token_sum / len(paths), other_sum / len(paths)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--dataset", nargs="+", required=True, help="pre-optimisation outputs to compare")
    parser.add_argument("--identities", type=int, default=6, help="how many held-out identities")
    parser.add_argument("--ridge", type=float, default=1.0)
    parser.add_argument("--num-images", type=int, default=2, help="images per fidelity prompt")
    parser.add_argument("--workdir", default="runs/benchmark-hyperdreambooth-oracle")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from textual_inversion.builds.hypernetwork.identities import held_out
    from textual_inversion.methods.lidb_file import write_rank1_lora
    from textual_inversion.methods.lidb_layers import lora_factors, target_layers
    from textual_inversion.models import load_pipeline

    identities = held_out()[:args.identities]
    base = load_pipeline("miniworld")  # only read: for the token's text features, layer shapes, pipeline class
    rows = []
    for dataset in args.dataset:
        count, predictions, metadata = oracle_weights(Path(dataset), identities, args.ridge)
        on_token, elsewhere = token_selectivity(Path(dataset), base)
        shapes = target_layers(base.unet, int(metadata["down_dim"]), int(metadata["up_dim"]),
                               metadata.get("lidb_layers", "all"))
        scores = []
        for identity, weights in zip(identities, predictions, strict=True):
            out = Path(args.workdir) / Path(dataset).name / identity.name
            lora = write_rank1_lora(out, type(base), lora_factors(shapes, weights, int(metadata["seed"])))
            scores.append(score(lora, identity, out / "evaluation", args.num_images))
            print(json.dumps({"dataset": dataset, "identity": identity.name, "fidelity": scores[-1]}), flush=True)
        rows.append(f"| {dataset} ({metadata.get('lidb_down', 'learn')} down) | {count} | {on_token:.1f} | {elsewhere:.1f} | "
                    f"{statistics.mean(scores):.2f} | {' '.join(f'{s:.2f}' for s in scores)} |")
    lines = ["# HyperDreamBooth: weights predicted from the TRUE attributes (the fits' ceiling)", "",
             f"Produced by `{command()}`.", "",
             f"Ridge regression (λ {args.ridge}) from one-hot shape/colour/pattern to each training fit's canonical "
             f"LiDB factors, applied to {len(identities)} held-out identities; fidelity by the judge with "
             f"{args.num_images} images per prompt. Change at the token / elsewhere: mean norm of the fits' change "
             "to the cross-attention keys and values (all layers together) at the token's positions and at every "
             "other position of the training prompts.", "",
             "| fits | training fits | change at the token | change elsewhere | mean fidelity | per identity |",
             "|---|---|---|---|---|---|", *rows]
    print_and_write(lines, RESULTS)


if __name__ == "__main__":
    main()
