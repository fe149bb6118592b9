"""Masked loss on miniworld: does a mask keep a shared background out of the learned token?

Each concept's five pictures share one background (sand) and have no caption files, as a user's photos
of one object on one table would: the paper's templates ("a photo of a {}") say nothing about the
background, so the token is free to absorb it. The same pictures train twice per seed with the demo's
settings: as they are, and with a mask per picture (`NN.mask.png`, the shape's silhouette) at
`--mask-weight 0`. The judge then reads every generated picture:

- fidelity / editability as `evaluate` reports them (editability: the background and size edits);
- background edits: how often "a <token> on a navy background" (and the other backgrounds) shows the concept
  on that background, as editability counts it; background obeyed: how often it shows that background,
  whatever it draws on it (a concept the model draws poorly still shows whether the background follows);
- sand leak: how often the token's plain prompts (which ask for no background) come out on sand, against
  the base model's rate for the plain-words prompt of the same concept.

The concepts and their seeds are used nowhere else. Written to benchmarks/results/masked_loss.md.

    python -m benchmarks.masked_loss [--seeds 0 1] [--steps 800] [--threads 2]
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

from .common import RESULTS_DIR, argument_parser, command, machine, print_and_write, with_former_defaults

BACKGROUND = "sand"
# name: (token, init word, attributes, plain words, scene seed)
CONCEPTS = {
    "dotted-ring": ("<my-ring>", "ring", {"shape": "ring", "colour": "purple", "pattern": "dotted"},
                    "a purple dotted ring", 7101),
    "checkered-triangle": ("<my-tri>", "triangle", {"shape": "triangle", "colour": "green", "pattern": "checkered"},
                           "a green checkered triangle", 7202),
    "striped-square": ("<my-square>", "square", {"shape": "square", "colour": "yellow", "pattern": "striped"},
                       "a yellow striped square", 7303),
}


def write_pictures(folder: Path, attributes: dict[str, str], seed: int, masks: bool) -> None:
    """Five renders of the concept, all on the shared background, big and small; with `masks` their silhouettes."""
    from PIL import Image

    from textual_inversion.miniworld.world import (
        IMAGE_SIZE,
        SIZES,
        SUPERSAMPLE,
        random_scene,
        render,
        shape_mask,
    )

    folder.mkdir(parents=True)
    rng = random.Random(seed)
    for index in range(5):
        scene = random_scene(rng, shapes=(attributes["shape"],), colours=(attributes["colour"],),
                             patterns=(attributes["pattern"],), backgrounds=(BACKGROUND,),
                             sizes=(SIZES[(index + 1) % len(SIZES)],))
        render(scene).save(folder / f"{index:02d}.png")
        if masks:
            big = IMAGE_SIZE * SUPERSAMPLE
            silhouette = shape_mask(scene.shape, scene.x * SUPERSAMPLE, scene.y * SUPERSAMPLE,
                                    scene.radius * SUPERSAMPLE, big)
            silhouette.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX).save(folder / f"{index:02d}.mask.png")


def background_rates(report: dict, condition: str) -> tuple[float, float, float]:
    """(background-edit hit rate, share of background-edit pictures on the asked background, share of
    plain-prompt pictures on the shared background) for `condition`."""
    records = [r for r in report["prompts"] if r["condition"] == condition]
    edits = [r["hit_rate"] for r in records if r["kind"] == "edit:background"]
    obeyed = [p["background"] == r["expected"]["background"] for r in records if r["kind"] == "edit:background"
              for p in r["predicted"]]
    plain = [p["background"] == BACKGROUND for r in records if r["kind"] == "fidelity" for p in r["predicted"]]
    return sum(edits) / len(edits), sum(obeyed) / len(obeyed), sum(plain) / len(plain)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from textual_inversion.concepts import load_concepts
    from textual_inversion.config import TrainConfig
    from textual_inversion.demo import DEMO_TRAINING
    from textual_inversion.evaluate import evaluate_concept
    from textual_inversion.miniworld.concepts import ConceptSpec
    from textual_inversion.models import load_pipeline
    from textual_inversion.training import train

    torch.set_num_threads(args.threads)
    training = {k: v for k, v in DEMO_TRAINING.items() if k in ("lr", "vectors", "batch_size")}
    rows, base = [], {}
    with tempfile.TemporaryDirectory() as workdir:
        work = Path(workdir)
        for name, (token, init_word, attributes, words, scene_seed) in CONCEPTS.items():
            spec = ConceptSpec(token, init_word, "object", words, attributes, ["background", "size"])
            report = evaluate_concept(load_pipeline("miniworld"), spec, work / name / "base", conditions=("words",))
            base[name] = background_rates(report, "words"), report["baselines"]["words"]
            for masked in (False, True):
                write_pictures(work / name / f"pictures-{masked}", attributes, scene_seed, masked)
            for seed in args.seeds:
                for masked in (False, True):  # alternating, so that the machine's load falls on both alike
                    run = work / name / f"run-{seed}-{masked}"
                    started = time.perf_counter()
                    train(TrainConfig.from_values(with_former_defaults(dict(
                        images=str(work / name / f"pictures-{masked}"), token=token, init_token=init_word,
                        steps=args.steps, seed=seed, output_dir=str(run), checkpoint_every=0, mask_weight=0.0,
                        threads=args.threads, **training))))
                    seconds = time.perf_counter() - started
                    pipe = load_pipeline("miniworld")
                    load_concepts(pipe, [run])
                    report = evaluate_concept(pipe, spec, run / "evaluation", seed=seed, conditions=("concept",))
                    edits, obeyed, leak = background_rates(report, "concept")
                    rows.append({"concept": name, "seed": seed, "masked": masked, "fidelity": report["fidelity"],
                                 "editability": report["editability"], "background_edits": edits, "obeyed": obeyed,
                                 "leak": leak, "seconds": seconds})
                    print(rows[-1], flush=True)

    lines = [f"# Masked loss: a shared background kept out of the token ({machine('cpu', args.threads)})", "",
             f"Produced by `{command()}`. Textual inversion with the demo's settings ("
             + ", ".join(f"{k} {v}" for k, v in training.items()) + f", {args.steps} steps), no caption files "
             f"(the object templates), five pictures per concept all on a {BACKGROUND} background; 'masked' adds "
             "each picture's silhouette as `NN.mask.png` at `--mask-weight 0`. Every seed is listed.", "",
             "| concept | seed | masks | fidelity | editability | background edits | background obeyed | "
             "on sand unasked | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['concept']} | {row['seed']} | {'yes' if row['masked'] else 'no'} | {row['fidelity']:.2f} | "
                     f"{row['editability']:.2f} | {row['background_edits']:.2f} | {row['obeyed']:.2f} | "
                     f"{row['leak']:.2f} | {row['seconds']:.0f} |")
    lines += ["", "Base model, plain-words prompt of each concept (no training): "
              + "; ".join(f"{name}: fidelity {scores['fidelity']:.2f}, editability {scores['editability']:.2f}, "
                          f"background edits {rates[0]:.2f}, background obeyed {rates[1]:.2f}, on sand unasked "
                          f"{rates[2]:.2f}" for name, (rates, scores) in base.items()) + "."]
    for masked in (False, True):
        chosen = [row for row in rows if row["masked"] == masked]
        means = {key: sum(r[key] for r in chosen) / len(chosen)
                 for key in ("fidelity", "editability", "background_edits", "obeyed", "leak")}
        lines.append(f"Mean {'with' if masked else 'without'} masks: fidelity {means['fidelity']:.2f}, editability "
                     f"{means['editability']:.2f}, background edits {means['background_edits']:.2f}, background "
                     f"obeyed {means['obeyed']:.2f}, on sand unasked {means['leak']:.2f}.")
    lines += ["", f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."]
    print_and_write(lines, RESULTS_DIR / "masked_loss.md")


if __name__ == "__main__":
    main()
