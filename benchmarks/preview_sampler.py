"""The demo's previews under other samplers and step counts: what each costs, and whether it shows the concept.

Trains the demo's concept (the teal circle) with the demo's settings, then draws its preview prompt ("a <token> on
a sand background", guidance as the demo's previews) under each sampler setting, alternating in rounds, at each
thread count the demo's previews run at (one before the threads' handoff at step 400, two after). Each setting
draws the same pictures (the preview's 4 images under --seeds each); miniworld's judge reads their colour and
shape, and the share drawn as a teal circle is what a user looking at the previews would see learned.

    python -m benchmarks.preview_sampler [--steps 800] [--rounds 3] [--seeds 0 1 2 3]
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

from .common import RESULTS_DIR, argument_parser, command, print_and_write, with_former_defaults

SETTINGS = [(None, 25), ("dpm++", 15), ("dpm++", 10), ("ddim", 10)]  # (sampler, steps); None: the model's (DDIM)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--steps", type=int, default=800, help="training steps (the demo's)")
    parser.add_argument("--rounds", type=int, default=3, help="timed previews per setting and thread count")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="preview seeds to read")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    from textual_inversion import TrainConfig, train
    from textual_inversion.demo import CONCEPT_NAME, DEMO_OUTPUTS, DEMO_TRAINING, write_concept_images
    from textual_inversion.miniworld.judge import load_judge, predict
    from textual_inversion.models import load_pipeline
    from textual_inversion.training import preview_images, render_previews

    with tempfile.TemporaryDirectory() as workdir:
        spec = write_concept_images(Path(workdir) / "images")
        prompt = f"a {spec.token} on a sand background"  # the demo's preview prompt
        config = TrainConfig.from_values(with_former_defaults(dict(
            model="miniworld", images=str(Path(workdir) / "images"), token=spec.token, init_token=spec.init_word,
            steps=args.steps, seed=0, threads=1, output_dir=str(Path(workdir) / "run"), checkpoint_every=0,
            **DEMO_TRAINING)))
        pipe = load_pipeline("miniworld")
        train(config, pipe=pipe)  # the pipeline keeps the learned token
        pipe.set_progress_bar_config(disable=True)
        preview = dataclasses.replace(config, validation_prompt=prompt,
                                      num_validation_images=DEMO_OUTPUTS["num_validation_images"])
        seconds = {(setting, threads): [] for setting in SETTINGS for threads in (1, 2)}
        for round_index in range(args.rounds):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                for setting in SETTINGS if round_index % 2 == 0 else SETTINGS[::-1]:
                    sampler, steps = setting
                    timed = dataclasses.replace(preview, validation_sampler=sampler, validation_steps=steps)
                    started = time.perf_counter()
                    render_previews(pipe, timed, Path(workdir) / "preview.png", 0)
                    seconds[(setting, threads)].append(time.perf_counter() - started)
        judge = load_judge()
        read = {}
        for setting in SETTINGS:
            sampler, steps = setting
            images = [image for seed in args.seeds for image in preview_images(
                pipe, dataclasses.replace(preview, seed=seed, validation_sampler=sampler, validation_steps=steps), 0)]
            shown = sum(all(reading[name] == value for name, value in spec.attributes.items())
                        for reading in predict(images, judge))
            total = len(images)
            read[setting] = (shown, total)
    lines = [f"# The demo's previews under other samplers: cost and what they show (CPU, {os.cpu_count()} cores)", "",
             f"Produced by `{command()}`. The demo's concept ({CONCEPT_NAME}) trained {args.steps} steps with the "
             f"demo's settings (seed 0, 1 thread), then its preview ('{prompt}', "
             f"{DEMO_OUTPUTS['num_validation_images']} images) drawn under each setting, {args.rounds} rounds "
             "alternating; the judge reads the previews of seeds "
             f"{', '.join(map(str, args.seeds))}.", "",
             "| sampler, steps | seconds a preview, 1 thread (median) | 2 threads | drawn as the concept |",
             "|---|---|---|---|"]
    for setting in SETTINGS:
        sampler, steps = setting
        shown, total = read[setting]
        name = sampler or "the model's (DDIM)"
        lines.append(f"| {name}, {steps} | "
                     f"{statistics.median(seconds[(setting, 1)]):.2f} | {statistics.median(seconds[(setting, 2)]):.2f} | "
                     f"{shown} of {total} |")
    lines += ["", f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."]
    print_and_write(lines, RESULTS_DIR / "preview_sampler.md")


if __name__ == "__main__":
    main()
