"""Rank Textual Inversion, DreamBooth, LoRA and pivotal tuning on the bundled miniworld concepts.

Every method gets the same budget of base-model forward/backward passes (images through the UNet,
class images included), each run happens in a fresh subprocess so its peak memory is its own, and
the table (fidelity, editability, wall time, peak memory, output size) is printed and written to
benchmarks/results/methods.md.

    python -m benchmarks.methods [--passes 1600] [--num-images 4] [--concepts hidden-colour star ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from .common import (
    RESULTS_DIR,
    argument_parser,
    bundled_concept,
    command,
    print_and_write,
    with_former_defaults,
    with_init_token,
)

CONCEPTS = ("hidden-colour", "star", "dotted-style", "my-toy")
BATCH = 4
# Per-method settings for miniworld (a small model: higher rates than Stable Diffusion needs).
METHODS = {
    "textual-inversion": {"lr": 0.02},
    "dreambooth": {"lr": 5e-5, "class_prompt": "a photo of a {init}", "num_class_images": 20, "batch_size": BATCH // 2},
    "lora": {"lr": 1e-3, "rank": 8},
    "pivotal": {"lr": 0.02, "lora_lr": 1e-3, "rank": 8, "ti_fraction": 0.5},
}


def run_settings(settings: dict, spec) -> tuple[dict, int]:
    """A method's TrainConfig values for concept `spec` (batch size BATCH unless given, the init word filled into a
    class prompt), and the UNet passes one optimizer step makes (class pictures included)."""
    settings = {"batch_size": BATCH, **settings}
    if "class_prompt" in settings:
        settings["class_prompt"] = settings["class_prompt"].format(init=spec.init_word)
    return settings, settings["batch_size"] * (2 if "class_prompt" in settings else 1)


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def output_bytes(paths) -> int:
    """The size of a run's outputs: files, and folders (a DreamBooth pipeline) with everything in them."""
    return sum(f.stat().st_size for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())


def train_values(settings: dict, spec, folder: Path, output_dir: Path, steps: int, **fixed) -> dict:
    """The TrainConfig values of one benchmark run: a method's `settings` (run_settings' output; "method" names it,
    textual inversion if absent) on concept `spec`, its pictures in `folder`, and the `fixed` values (model,
    device, seed, ...). --init-token only where the method has it ("{init}" by default; "{words}" names the
    concept's plain words), so that the TrainConfig is built strictly and a misspelt option stops the run."""
    from textual_inversion.evaluate import stand_in

    settings = with_init_token(settings, spec.init_word, stand_in(spec, "words"))
    return with_former_defaults(dict(
        images=str(folder), token=spec.token, property=spec.property, steps=steps, checkpoint_every=0,
        overwrite=True, output_dir=str(output_dir), **fixed, **settings))


def method_values(method: str, concept: str, passes: int, workdir: Path, model: str, device: str) -> dict:
    """The TrainConfig values of `method`'s run on bundled concept `concept` with METHODS' settings."""
    folder, spec = bundled_concept(concept)
    settings, per_step = run_settings({"method": method, **METHODS[method]}, spec)
    return train_values(settings, spec, folder, workdir / f"{method}-{concept}", passes // per_step, model=model,
                        device=device)


def run_one(method: str, concept: str, passes: int, num_images: int, workdir: Path, model: str) -> dict:
    """Train one method on one concept and evaluate it; runs inside its own process."""
    import torch

    from textual_inversion import TrainConfig, train
    from textual_inversion.concepts import load_concepts, pipeline_of
    from textual_inversion.evaluate import evaluate_concept
    from textual_inversion.models import load_pipeline

    _, spec = bundled_concept(concept)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.monotonic()
    result = train(TrainConfig.from_values(method_values(method, concept, passes, workdir, model, device)))
    seconds = time.monotonic() - started
    size = output_bytes(result.outputs.values())
    run_dir = str(result.output_dir)
    pipe = load_pipeline(pipeline_of([run_dir]) or model).to(device)
    load_concepts(pipe, [run_dir])
    report = evaluate_concept(pipe, spec, workdir / f"{method}-{concept}" / "evaluation", num_images=num_images,
                              conditions=("concept",))
    return {"method": method, "concept": concept, "fidelity": report["fidelity"],
            "editability": report["editability"], "seconds": seconds, "steps": result.steps,
            "peak_mb": (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
                        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "device": device, "output_bytes": size}


def baselines(concept: str, num_images: int, workdir: Path, model: str) -> dict:
    from textual_inversion.evaluate import evaluate_concept
    from textual_inversion.models import load_pipeline

    _, spec = bundled_concept(concept)
    import torch

    pipe = load_pipeline(model).to("cuda" if torch.cuda.is_available() else "cpu")
    report = evaluate_concept(pipe, spec, workdir / f"baselines-{concept}",
                              num_images=num_images, conditions=("init_word", "words"))
    return report["baselines"]


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--passes", type=int, default=1600, help="UNet forward/backward passes per run")
    parser.add_argument("--num-images", type=int, default=4, help="images per evaluation prompt")
    parser.add_argument("--concepts", nargs="+", default=list(CONCEPTS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--workdir", default="runs/benchmark-methods")
    parser.add_argument("--model", default="miniworld", help="another model only to try the script out")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "CONCEPT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    if args.one:
        print(json.dumps(run_one(*args.one, args.passes, args.num_images, workdir, args.model)))
        return

    rows, base = [], {}
    for concept in args.concepts:
        base[concept] = baselines(concept, args.num_images, workdir, args.model)
        for method in args.methods:
            one = [sys.executable, "-m", "benchmarks.methods", "--one", method, concept, "--passes", str(args.passes),
                   "--num-images", str(args.num_images), "--workdir", str(workdir), "--model", args.model]
            output = subprocess.run(one, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(output.strip().splitlines()[-1]))
            print(f"{concept:<14} {method:<18} fidelity {rows[-1]['fidelity']:.2f} "
                  f"editability {rows[-1]['editability']:.2f} {rows[-1]['seconds']:.0f} s", flush=True)

    device = rows[0]["device"] if rows else "cpu"
    memory = "peak GPU memory" if device == "cuda" else "peak memory (RSS)"
    lines = [f"# Methods on miniworld ({args.passes} UNet passes each, {args.num_images} images per prompt, {device})", "",
             f"Produced by `{command()}`. Fidelity: images showing the concept's defining attributes; "
             "editability: prompts changing one free attribute honoured while the concept stays (judge-scored).", "",
             f"| concept | method | fidelity | editability | train time | {memory} | output size |",
             "|---|---|---|---|---|---|---|"]
    for concept in args.concepts:
        for name, values in base[concept].items():
            lines.append(f"| {concept} | baseline: {name.replace('_', ' ')} | {values['fidelity']:.2f} | "
                         f"{values['editability']:.2f} | - | - | - |")
        for row in (r for r in rows if r["concept"] == concept):
            lines.append(f"| {concept} | {row['method']} | {row['fidelity']:.2f} | {row['editability']:.2f} | "
                         f"{row['seconds']:.0f} s | {row['peak_mb']:.0f} MB | {human_size(row['output_bytes'])} |")
    print_and_write(lines, RESULTS_DIR / "methods.md")


if __name__ == "__main__":
    main()
