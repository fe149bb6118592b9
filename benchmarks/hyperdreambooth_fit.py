"""Can the hypernetwork reproduce its own training set? Scores on TRAINING identities (not held out):

  fit:        the identity's pre-optimised LiDB weights (what the hypernetwork is trained to predict),
  prediction: each --hypernetwork's prediction from the identity's first stored render.

If a prediction scores like the fit here but near zero on held-out identities (benchmarks/hyperdreambooth.py),
the hypernetwork memorises its training identities instead of learning the map from picture to weights.

    python -m benchmarks.hyperdreambooth_fit --dataset runs/hyper-dataset-kv --identities 4 \
        --hypernetwork src/textual_inversion/miniworld/hypernetwork runs/hyper-w1
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from .common import RESULTS_DIR, argument_parser, command, print_and_write

RESULTS = RESULTS_DIR / "hyperdreambooth_fit.md"


def score(lora: Path, identity, output: Path, num_images: int) -> float:
    from textual_inversion.concepts import load_concepts
    from textual_inversion.evaluate import evaluate_concept
    from textual_inversion.models import load_pipeline

    pipe = load_pipeline("miniworld")
    load_concepts(pipe, [str(lora)])
    return evaluate_concept(pipe, identity.spec(), output, num_images=num_images, edits=False,
                            conditions=("concept",))["fidelity"]


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--dataset", default="runs/hyper-dataset-kv", help="pre-optimisation output")
    parser.add_argument("--identities", type=int, default=4, help="how many of its identities")
    parser.add_argument("--hypernetwork", nargs="+", default=[None], help="hypernetwork folders (default: the bundled)")
    parser.add_argument("--num-images", type=int, default=2, help="images per fidelity prompt")
    parser.add_argument("--workdir", default="runs/benchmark-hyperdreambooth-fit")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from textual_inversion.builds.hypernetwork.identities import all_identities
    from textual_inversion.builds.hypernetwork.train import read_training_summary
    from textual_inversion.data import load_rgb
    from textual_inversion.methods.hypernetwork import write_prediction
    from textual_inversion.miniworld import HYPERNETWORK_DIR
    from textual_inversion.models import load_pipeline
    from textual_inversion.outputs import LIDB, LORA, OUTPUT_FILES

    by_name = {identity.name: identity for identity in all_identities()}
    folders = sorted(p.parent.parent for p in Path(args.dataset).glob(f"*/run/{OUTPUT_FILES[LIDB]}"))
    networks = [Path(h).resolve() if h else HYPERNETWORK_DIR for h in args.hypernetwork]
    base = load_pipeline("miniworld")  # predicting only reads it; each score loads its own copy
    rows = []
    for folder in folders[:args.identities]:
        identity, work = by_name[folder.name], Path(args.workdir) / folder.name
        row = {"identity": identity.name, "fit": score(folder / "run" / OUTPUT_FILES[LORA], identity, work / "fit",
                                                         args.num_images)}
        render = load_rgb(sorted((folder / "images").glob("*.png"))[0])
        for index, network in enumerate(networks):
            lora = write_prediction(base, [render], str(network), work / f"prediction-{index}")
            row[network] = score(lora, identity, work / f"prediction-{index}" / "evaluation", args.num_images)
        rows.append(row)
        print(row, flush=True)
    def label(network: Path) -> str:
        return "bundled" if network == HYPERNETWORK_DIR else network.name

    header = ["identity", "pre-optimised fit"] + [f"prediction: {label(n)}" for n in networks]
    lines = ["# HyperDreamBooth: the hypernetwork on its own training identities", "",
             f"Produced by `{command()}`. "
             "Fidelity (judge) of the plain prompts, " f"{args.num_images} images per prompt; each prediction is "
             "made from the identity's first stored render.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append(f"| {row['identity']} | {row['fit']:.2f} | " + " | ".join(f"{row[n]:.2f}" for n in networks) + " |")
    means = [statistics.fmean(r["fit"] for r in rows)] + [statistics.fmean(r[n] for r in rows) for n in networks]
    lines.append("| **mean** | " + " | ".join(f"**{m:.2f}**" for m in means) + " |")
    lines += ["", "How each hypernetwork was trained (its `training.json`):", ""]
    for network in networks:
        info = read_training_summary(network)
        lines.append(f"- {label(network)}: {info['steps']} steps, lr {info['lr']}, diffusion loss weight "
                     f"{info['diffusion_weight']}, {info['identities']} pre-optimised identities; weight-space loss "
                     f"{info['final_weight_loss']:.3f} over the last 50 steps (1: no better than their mean).")
    print_and_write(lines, RESULTS)


if __name__ == "__main__":
    main()
