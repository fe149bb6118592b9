"""`textual-inversion demo` from launch to exit, two ways side by side.

    python -m benchmarks.demo_speed [--compare baselines|evaluation-threads|training-threads|settings|previews|
                                               token-gradient|fast]
                                    [--rounds 2] [--seed 0]

--compare baselines (the default; writes demo_speed.md):

On a CPU with a core to spare the demo scores the baselines (the base model with the init word and with plain
words: two thirds of the evaluation's images) in a second process while the token trains. "after" runs the same
command as on a machine with one usable CPU, where they wait for the training. The two alternate, each a fresh
process timed from launch to exit; the scores must be the same (the same images, seeds and thread count).

--compare evaluation-threads (writes demo_speed_evaluation_threads.md): the demo as installed, whose evaluation of
the token takes the baselines' thread once their process is done, against "kept", where it keeps the training's.
The scores may differ: other thread counts sum in another order.

--compare training-threads (writes demo_speed_training_threads.md): the demo as installed, whose training computes
with the baselines' thread too from demo.THREADS_HANDOFF_STEP on, against "training-kept", whose training keeps its
own thread to the end. The scores may differ, for the same reason.

--compare settings (writes demo_speed_settings.md): the demo's training for 500 steps at lr 0.2 against 800 at
lr 0.1 (both with the moving average, everything else as installed). The scores differ: other vectors.

--compare previews (writes demo_speed_previews.md): the demo as installed, whose previews are drawn with DPM++ at 15
steps, against "previews-ddim-25", drawn with the model's DDIM at 25. The scores must be the same: the previews
draw from their own generator and give the pipeline its own sampler back.

--compare token-gradient (writes demo_speed_token_gradient.md): the demo's training with --token-gradient finest
--token-gradient-fraction 0.5 (the backward pass stopping at the finest cross-attention layers for steps 0-399)
against the demo as installed. The scores differ: other vectors.

--compare fast (writes demo_speed_fast.md): `demo --fast` (pivotal tuning stopped when learned) against the demo as
installed. The scores differ: another method.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import RESULTS_DIR, argument_parser, command, print_and_write


def patched_cli(setup: str, *extra_args: str) -> list[str]:
    """The CLI in a fresh interpreter once `setup` (Python) has run, `extra_args` after the command line's own; it
    ends as the installed command does (cli.console)."""
    return [sys.executable, "-c", f"import sys; {setup}; from textual_inversion.cli import console; "
            f"sys.argv += {list(extra_args)!r}; console()"]


VARIANTS = {
    "beside": [sys.executable, "-m", "textual_inversion.cli"],
    # The demo as on one usable CPU (models.usable_cpus decides), everything else as installed.
    "after": patched_cli("import textual_inversion.models as models; models.usable_cpus = lambda: 1"),
    # The token's evaluation computes with the training's threads only.
    "kept": patched_cli("import textual_inversion.demo as demo; "
                        "demo.threads_after_training = lambda config, baselines: demo.training_threads(config)"),
    # The training keeps the threads it started with; no handoff at demo.THREADS_HANDOFF_STEP.
    "training-kept": patched_cli("import textual_inversion.demo as demo; demo.THREADS_HANDOFF_STEP = -1"),
    # Another learning rate and step count, each pinned (not the installed defaults), everything else as installed.
    "lr0.1-800-steps": patched_cli("import textual_inversion.demo as demo; demo.DEMO_TRAINING['lr'] = 0.1",
                                   "--steps", "800"),
    "lr0.2-500-steps": patched_cli("import textual_inversion.demo as demo; demo.DEMO_TRAINING['lr'] = 0.2",
                                   "--steps", "500"),
    # The token learning through the finest cross-attention layers for the first half of the steps, then every layer.
    "finest-half": patched_cli("import textual_inversion.demo as demo; "
                               "demo.DEMO_TRAINING.update(token_gradient='finest', token_gradient_fraction=0.5)"),
    "fast": patched_cli("pass", "--fast"),
    # The previews drawn with the model's own sampler (DDIM) at 25 steps, everything else as installed.
    "previews-ddim-25": patched_cli("import textual_inversion.demo as demo; "
                                    "demo.DEMO_OUTPUTS.update(validation_sampler=None, validation_steps=25)"),
}
COMPARISONS = {  # name: (the demo as installed, the other way), the results file's title
    "baselines": (("beside", "after"), "baselines beside the training against after it"),
    "evaluation-threads": (("beside", "kept"), "the token's evaluation with the baselines' thread once they are "
                                               "done, against the training's threads only"),
    "training-threads": (("beside", "training-kept"), "the training with the baselines' thread from the handoff "
                                                      "step (demo.THREADS_HANDOFF_STEP), against its own thread "
                                                      "throughout"),
    "settings": (("lr0.2-500-steps", "lr0.1-800-steps"), "500 steps at lr 0.2 against 800 at lr 0.1"),
    "token-gradient": (("finest-half", "beside"), "the token learning through the finest layers for the first half "
                                                  "of the steps against every layer throughout"),
    "fast": (("fast", "beside"), "demo --fast (pivotal tuning stopped when learned) against the demo's textual "
                                 "inversion"),
    "previews": (("beside", "previews-ddim-25"), "previews drawn with DPM++ at 15 steps against the model's DDIM at "
                                                 "25"),
}


def timed_demo(variant: str, seed: int, folder: Path) -> dict:
    """One demo in a fresh process: launch-to-exit seconds, training seconds and the judge's scores."""
    started = time.perf_counter()
    done = subprocess.run([*VARIANTS[variant], "demo", "--seed", str(seed), "--output-dir", str(folder), "--overwrite"],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{variant}: the demo failed: {done.stderr[-2000:]}")
    report = json.loads((folder / "evaluation" / "evaluation.json").read_text())
    trained = re.search(r"trained in (\d+) s", done.stdout)
    return {"variant": variant, "seconds": seconds, "train_s": float(trained.group(1)) if trained else float("nan"),
            "scores": (report["fidelity"], report["editability"],
                       *(report["baselines"][b][m] for b in ("init_word", "words") for m in ("fidelity", "editability")))}


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--compare", choices=list(COMPARISONS), default="baselines")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    variants, title = COMPARISONS[args.compare]
    runs = []
    with tempfile.TemporaryDirectory() as workdir:
        for round_index in range(args.rounds):
            order = list(variants) if round_index % 2 == 0 else list(reversed(variants))
            for variant in order:
                runs.append({"round": round_index + 1, **timed_demo(variant, args.seed, Path(workdir) / variant)})
                print(f"round {round_index + 1} {variant}: {runs[-1]['seconds']:.0f} s", flush=True)
    installed, other = variants
    ratios = [mine["seconds"] / theirs["seconds"] for mine, theirs in
              zip([r for r in runs if r["variant"] == installed], [r for r in runs if r["variant"] == other], strict=True)]
    same = len({r["scores"] for r in runs}) == 1
    lines = [f"# The demo from launch to exit, {title} (seed {args.seed})", "",
             f"Produced by `{command()}`, {os.cpu_count()} CPUs; each run a fresh `textual-inversion demo` process, "
             "the variants alternating.", "",
             "| round | variant | launch to exit | training | fidelity / editability | init word | plain words |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        s = r["scores"]
        lines.append(f"| {r['round']} | {r['variant']} | {r['seconds']:.0f} s | {r['train_s']:.0f} s | "
                     f"{s[0]:.2f} / {s[1]:.2f} | {s[2]:.2f} / {s[3]:.2f} | {s[4]:.2f} / {s[5]:.2f} |")
    lines += ["", f"{installed} / {other}, per round: {', '.join(f'{x:.2f}' for x in ratios)} (median "
                  f"{statistics.median(ratios):.2f}). Scores the same in every run: {'yes' if same else 'NO'}."]
    suffix = "" if args.compare == "baselines" else "_" + args.compare.replace("-", "_")
    print_and_write(lines, RESULTS_DIR / f"demo_speed{suffix}.md")


if __name__ == "__main__":
    main()
