"""The demo's training seen from inside: the evaluation's fidelity at every checkpoint, under several
evaluation seeds.

A demo seed that misses the fidelity target may have learned the concept and lost it again (the vectors
wander at a constant rate), never learned it, or learned it while its evaluation drew unlucky pictures
(16 of them: one picture is 0.06 of fidelity). Scoring each checkpoint's vectors with the evaluation's own
seed and with others tells these apart. Training as `textual-inversion demo` trains (its settings, or
--set); the evaluation's fidelity prompts as the demo scores them (4 pictures each, DDIM 25, guidance 4).

    python -m benchmarks.demo_trajectory [--seeds 4 7] [--eval-seeds 1000 1001] [--every 100] [--steps 800] [--set k=v]
                                         [--average-only] [--prodigy]

--prodigy trains with the Prodigy optimizer (Mishchenko & Defazio 2023, the `prodigyopt` package, which is not a
dependency: pip install prodigyopt) in place of AdamW, at its authors' lr of 1.0 in every parameter group, with
its bias correction: the learning-rate-free optimizer kohya's scripts and OneTrainer offer. Not an option of
`train`; tried here on the demo (not adopted: benchmarks/results/demo_trajectory_prodigy.md).
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

from .common import RESULTS_DIR, argument_parser, command, machine, print_and_write
from .demo_seeds import parse_setting


def fidelities(vectors: dict, spec, seeds: list[int], workdir: Path) -> list[float]:
    """The evaluation's fidelity of `vectors` (a checkpoint's weights) on a fresh miniworld, images seeded by each
    of `seeds` in turn."""
    from textual_inversion.concepts import load_concepts
    from textual_inversion.demo import EVALUATION
    from textual_inversion.embedding import Embedding
    from textual_inversion.evaluate import score_condition
    from textual_inversion.models import load_pipeline

    pipe = load_pipeline("miniworld")
    load_concepts(pipe, [Embedding(spec.token, vectors)])
    return [score_condition(pipe, spec, "concept", workdir, seed=seed, edits=False, **EVALUATION)[0]["fidelity"]
            for seed in seeds]


def use_prodigy() -> None:
    """Make `train` build Prodigy where it would build AdamW (every group at lr 1.0: Prodigy finds the step size)."""
    try:
        from prodigyopt import Prodigy
    except ImportError:
        raise SystemExit("--prodigy needs the prodigyopt package: pip install prodigyopt") from None
    from textual_inversion import training

    def prodigy(parameter_groups: list[dict], **options) -> Prodigy:  # train's betas, eps and weight decay
        return Prodigy([{**group, "lr": 1.0} for group in parameter_groups], use_bias_correction=True, **options)

    training.adamw = prodigy


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--seeds", nargs="+", type=int, default=[4, 7], help="training seeds")
    parser.add_argument("--eval-seeds", nargs="+", type=int, default=[1000, 1001],
                        help="evaluation seeds besides the training seed (which the demo's evaluation uses)")
    parser.add_argument("--every", type=int, default=100, help="steps between scored checkpoints")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", nargs="+", default=[], metavar="OPTION=VALUE", help="as benchmarks.demo_seeds")
    parser.add_argument("--average-only", action="store_true",
                        help="with a moving average, score only it (what the run would save if it ended there)")
    parser.add_argument("--prodigy", action="store_true", help="Prodigy instead of AdamW (see above)")
    parser.add_argument("--results-suffix", default="")
    args = parser.parse_args()
    overrides = dict(parse_setting(text, parser) for text in args.set)

    import torch

    from textual_inversion import train
    from textual_inversion.checkpoints import list_checkpoints, load_checkpoint
    from textual_inversion.config import DemoConfig
    from textual_inversion.demo import DEMO_TRAINING, demo_train_config, write_concept_images

    torch.set_num_threads(args.threads)
    if args.prodigy:
        use_prodigy()
    training = {**DEMO_TRAINING, **overrides}
    steps = args.steps or DemoConfig().training_steps
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for seed in args.seeds:
            run = Path(workdir) / f"seed-{seed}"
            spec = write_concept_images(run / "images")
            demo = DemoConfig(output_dir=str(run), seed=seed, threads=args.threads, steps=steps)
            train(demo_train_config(demo, spec, training).replaced(checkpoint_every=args.every, keep_checkpoints=0))
            for checkpoint in list_checkpoints(run / "run"):
                weights, state = load_checkpoint(checkpoint)
                # With --ema-decay the moving average too (what the run saves). The last checkpoint is written
                # after the average replaced the vectors as trained, so it holds the average only.
                averaged = bool(state.get("ema"))
                average_alone = averaged and (state["step"] == steps or args.average_only)
                variants = {} if average_alone else {"as trained": weights["text_encoder"]}
                if averaged:
                    variants["moving average"] = state["ema"][0]
                for variant, vectors in variants.items():
                    scores = fidelities({"text_encoder": vectors}, spec, [seed, *args.eval_seeds], run / "evaluation")
                    rows.append({"seed": seed, "step": state["step"], "vectors": variant, "scores": scores})
                    print(rows[-1], flush=True)

    eval_names = ["the demo's (= training seed)", *map(str, args.eval_seeds)]
    lines = [f"# The demo's fidelity at every checkpoint ({machine('cpu', args.threads)})", "",
             f"Produced by `{command()}`. Training: {steps} steps, "
             + ("Prodigy (lr 1.0, bias correction) in place of AdamW, " if args.prodigy else "")
             + ", ".join(f"{k} {v}" for k, v in training.items())
             + f"; every {args.every} steps its vectors are scored on the evaluation's fidelity prompts (16 pictures), "
               "with the demo's evaluation seed (the training seed) and others. The last row of each seed is "
               "what a demo of that many steps would save; "
             + ("only the moving average of the vectors (what the run saves) is scored." if args.average_only else
                "with an ema_decay both the vectors as trained and their moving average (what the run saves) are "
                "scored, at the last step the average only (the run keeps no other)."), "",
             "| seed | step | vectors | " + " | ".join(f"fidelity, eval seed {name}" for name in eval_names)
             + " | mean |", "|---|---|---|" + "---|" * (len(eval_names) + 1)]
    for row in rows:
        lines.append(f"| {row['seed']} | {row['step']} | {row['vectors']} | " + " | ".join(f"{s:.2f}" for s in row["scores"])
                     + f" | {statistics.mean(row['scores']):.2f} |")
    lines += ["", f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."]
    print_and_write(lines, RESULTS_DIR / f"demo_trajectory{args.results_suffix}.md")


if __name__ == "__main__":
    main()
