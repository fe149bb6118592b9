"""How noisy the token's gradient is, where the noise comes from, and what each way of drawing a batch does to it,
on the demo's concept.

A step's gradient is an estimate from 4 pictures, each at a random noise level with random noise. This
benchmark holds the token's vectors fixed and draws many batches as `train` would (the demo's settings, its
pictures and captions), recording each batch's gradient instead of stepping. Two states of the vectors: the
demo's start, and a demo run's after `--trained-steps` steps.

- Per way of drawing a batch of 4 (`SAMPLINGS`): the noise, mean |g - m|^2 with m the mean gradient of every row
  of that state pooled (each way is unbiased, so they share it), against train's default draw; and the
  signal-to-noise ratio of one step, |m|^2 over that noise.
- Per quarter of the noise schedule, from batches of 1: how large a draw's gradient is there, the quarter's share
  of a draw's noise, how its mean points against the overall mean (cosine), and its own signal-to-noise ratio.

    python -m benchmarks.gradient_noise [--draws 128] [--trained-steps 200] [--seed 0] [--threads 2]
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

from .common import RESULTS_DIR, argument_parser, command, machine, print_and_write

# Each way of drawing a batch: train's options for it. Independent is train's default; stratified timesteps
# (--timesteps) spread one batch's noise levels over the schedule; antithetic noise (--noise-sampling) pairs them.
SAMPLINGS = {"independent": {}, "stratified timesteps": {"timesteps": "stratified"},
             "antithetic noise": {"noise_sampling": "antithetic"}}
QUARTERS = 4


def recorded_gradients(config) -> tuple[list, list]:
    """Each step's gradient of the token's rows ([vectors * dim] per step) over `config.steps` steps that do not
    move the vectors, and each step's batch timesteps."""
    import torch

    from textual_inversion import training

    gradients, timesteps = [], []

    class RecordingAdamW(torch.optim.AdamW):
        def step(self, closure=None):  # the gradient is kept; the vectors stay where they are
            gradients.append(torch.cat([p.grad.detach().flatten().clone() for group in self.param_groups
                                        for p in group["params"] if p.grad is not None]))

    def recording_draw(*args, **kwargs):
        batch = real_draw(*args, **kwargs)
        timesteps.append(batch.timesteps.clone())
        return batch

    real_adamw, real_draw = training.adamw, training.draw_batch
    training.adamw = lambda groups, **options: RecordingAdamW(groups, **options)
    training.draw_batch = recording_draw
    try:
        training.train(config)
    finally:
        training.adamw, training.draw_batch = real_adamw, real_draw
    return gradients, timesteps[1:]  # the first draw is the run's fixed batch (its loss curve), not a step's


def noise(gradients, mean=None) -> float:
    """mean |g - mean|^2 over `gradients` [N, P] (float64); without `mean`, around their own mean, unbiased."""
    if mean is not None:
        return ((gradients - mean) ** 2).sum(dim=1).mean().item()
    own = gradients.mean(dim=0)
    return ((gradients - own) ** 2).sum(dim=1).mean().item() * len(gradients) / (len(gradients) - 1)


def quarter_rows(gradients, timesteps, num_train_timesteps: int = 1000) -> list[tuple]:
    """Per quarter of the schedule, from batch-1 draws `gradients` [N, P] at `timesteps` [N]: (range, draws, rms
    gradient, share of a draw's noise, cosine of the quarter's mean with the overall mean, its own signal-to-noise)."""
    import torch

    mean = gradients.mean(dim=0)
    total = noise(gradients)
    quarter = timesteps * QUARTERS // num_train_timesteps
    rows = []
    for q in range(QUARTERS):
        part = gradients[quarter == q]
        own_mean = part.mean(dim=0)
        own_noise = noise(part)
        rows.append((f"{q * num_train_timesteps // QUARTERS}-{(q + 1) * num_train_timesteps // QUARTERS - 1}",
                     len(part), part.norm(dim=1).pow(2).mean().sqrt().item(),
                     len(part) / len(gradients) * noise(part, mean) / total,
                     torch.nn.functional.cosine_similarity(own_mean, mean, dim=0).item(),
                     ((own_mean ** 2).sum().item() - own_noise / len(part)) / own_noise))
    return rows


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--draws", type=int, default=128, help="batches drawn per state and way of drawing")
    parser.add_argument("--trained-steps", type=int, default=200, help="the second state: a demo run this far")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from textual_inversion import train
    from textual_inversion.config import DemoConfig
    from textual_inversion.demo import DEMO_TRAINING, demo_train_config, write_concept_images

    torch.set_num_threads(args.threads)
    sampling_rows, quarters = [], {}
    with tempfile.TemporaryDirectory() as workdir:
        spec = write_concept_images(Path(workdir) / "images")
        runs = itertools.count()

        def config(steps: int, **values):
            demo = DemoConfig(output_dir=workdir, seed=args.seed, threads=args.threads, steps=steps)
            return demo_train_config(demo, spec, {**DEMO_TRAINING, **values}).replaced(
                output_dir=str(Path(workdir) / f"run-{next(runs)}"), checkpoint_every=0, validation_prompt=None)

        trained = train(config(args.trained_steps)).embedding_path
        states = {"the demo's start (6 x 'circle')": {},
                  f"after {args.trained_steps} demo steps": {"init_token": "", "init_embedding": str(trained),
                                                              "vectors": DEMO_TRAINING["vectors"]}}
        for state, start in states.items():
            drawn = {sampling: torch.stack(recorded_gradients(config(args.draws, ema_decay=0.0, **options, **start))[0])
                     .double() for sampling, options in SAMPLINGS.items()}
            pooled = torch.cat(list(drawn.values())).mean(dim=0)
            reference = noise(drawn["independent"], pooled)
            for sampling, gradients in drawn.items():
                spread = noise(gradients, pooled)
                sampling_rows.append((state, sampling, (pooled ** 2).sum().item() / spread, spread / reference))
                print(sampling_rows[-1], flush=True)
            single, timesteps = recorded_gradients(config(args.draws * 2, ema_decay=0.0, batch_size=1, **start))
            quarters[state] = quarter_rows(torch.stack(single).double(), torch.cat(timesteps))
            print(state, quarters[state], flush=True)

    lines = [f"# The token's gradient: how noisy, from where, and under each way of drawing a batch "
             f"({machine('cpu', args.threads)})", "",
             f"Produced by `{command()}`. The demo's concept, pictures, captions and settings (seed {args.seed}), "
             "the vectors held still while batches are drawn. Signal-to-noise of one step: |m|^2 over mean |g - m|^2, "
             "m the mean gradient over every batch of 4 drawn for that state "
             f"({args.draws} per way); noise against independent: mean |g - m|^2 against the independent row's.", "",
             "| vectors | batch of 4 drawn with | signal-to-noise of one step | noise against independent |",
             "|---|---|---|---|"]
    lines += [f"| {state} | {sampling} | {snr:.3f} | {ratio:.2f} |" for state, sampling, snr, ratio in sampling_rows]
    lines += ["", f"Per quarter of the noise schedule ({args.draws * 2} batches of 1 per state; t from 0, least noise, "
              "to 999): a draw's rms gradient there; the quarter's share of the noise of one draw's gradient; the "
              "cosine between the quarter's mean gradient and the overall mean; the quarter's own signal-to-noise "
              "(|its mean|^2 over its draws' spread, unbiased: about 0 where the draws carry no direction).", "",
              "| vectors | t | draws | rms gradient | share of the noise | cosine with the mean | own signal-to-noise |",
              "|---|---|---|---|---|---|---|"]
    for state, rows in quarters.items():
        lines += [f"| {state} | {span} | {count} | {rms:.2e} | {share:.2f} | {cosine:.2f} | {snr:.3f} |"
                  for span, count, rms, share, cosine, snr in rows]
    lines += ["", f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."]
    print_and_write(lines, RESULTS_DIR / "gradient_noise.md")


if __name__ == "__main__":
    main()
