"""How much arithmetic the demo's training step is, and how fast this CPU does it: the floor under the demo's time.

Counts the floating-point operations of miniworld's UNet forward and backward at the demo's batch (4 pictures at
64 px, 16x16 latents; the gradient flows to the conditioning only, as in textual inversion, where the UNet is
frozen) with PyTorch's FlopCounterMode, then times the same forward and backward at each thread count. Their
product with the demo's step count is the time its training cannot go below at the demo's settings, whatever
the loop around the UNet does.

With `train --token-gradient up` or `finest` the gradient comes back to the token through some cross-attention
layers only and the backward pass stops where they begin: each variant is counted and timed too, in alternating
rounds (the first variant of a round changes from round to round), and its time given as a ratio to `all`'s.

    python -m benchmarks.step_flops [--threads 1 2] [--rounds 5] [--repeats 4] [--steps 800]
                                    [--token-gradient all up finest]
"""

from __future__ import annotations

import os
import statistics
import time

from textual_inversion.methods.textual_inversion import TOKEN_GRADIENT_CHOICES

from .common import RESULTS_DIR, argument_parser, command, print_and_write


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per thread count")
    parser.add_argument("--repeats", type=int, default=4, help="timed forward-and-backward passes per variant a round")
    parser.add_argument("--steps", type=int, default=800, help="the demo's step count")
    parser.add_argument("--token-gradient", nargs="+", default=list(TOKEN_GRADIENT_CHOICES),
                        choices=TOKEN_GRADIENT_CHOICES)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from textual_inversion.demo import DEMO_TRAINING
    from textual_inversion.methods.textual_inversion import stop_token_gradient
    from textual_inversion.models import load_pipeline

    pipe = load_pipeline("miniworld")
    unet = pipe.unet.float().requires_grad_(False)
    batch = DEMO_TRAINING["batch_size"]
    side = unet.config.sample_size
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(batch, unet.config.in_channels, side, side, generator=generator)
    timesteps = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (batch,), generator=generator)
    length = pipe.tokenizer.model_max_length
    conditioning = torch.randn(batch, length, unet.config.cross_attention_dim, generator=generator,
                               requires_grad=True)
    hooks = []

    def use(variant: str) -> None:
        for hook in hooks:
            hook.remove()
        hooks[:] = [] if variant == "all" else stop_token_gradient(unet, variant)

    def forward_and_backward() -> None:
        unet(latents, timesteps, conditioning).sample.square().mean().backward()

    gigaflops = {}
    for variant in args.token_gradient:
        use(variant)
        with FlopCounterMode(display=False) as counter:
            forward_and_backward()
        gigaflops[variant] = counter.get_total_flops() / 1e9
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        seconds = {variant: [] for variant in args.token_gradient}
        ratios = {variant: [] for variant in args.token_gradient}
        for variant in args.token_gradient:
            use(variant)
            for _ in range(3):
                forward_and_backward()
        for index in range(args.rounds):
            order = args.token_gradient[index % len(args.token_gradient):] + args.token_gradient[
                :index % len(args.token_gradient)]
            medians = {}
            for variant in order:
                use(variant)
                timed = []
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    forward_and_backward()
                    timed.append(time.perf_counter() - started)
                seconds[variant] += timed
                medians[variant] = statistics.median(timed)
            for variant in args.token_gradient:
                ratios[variant].append(medians[variant] / medians[args.token_gradient[0]])
        for variant in args.token_gradient:
            median = statistics.median(seconds[variant])
            rows.append((threads, variant, median, gigaflops[variant] / median, ratios[variant]))
    use("all")
    first = args.token_gradient[0]
    lines = [f"# The demo's training step: arithmetic and the floor it sets (CPU, {os.cpu_count()} cores)", "",
             f"Produced by `{command()}`. miniworld's UNet forward and backward at the demo's batch ({batch} "
             f"pictures, {side}x{side} latents, the gradient to the conditioning only), counted by PyTorch's "
             "FlopCounterMode; with --token-gradient up or finest the gradient comes back through those "
             "cross-attention layers only. Timed in "
             f"{args.rounds} alternating rounds of {args.repeats} passes per variant and thread count, after 3 "
             f"warm-up passes each; the ratio is the median of the rounds' median against {first}'s (range in "
             "brackets); the floor is the median times the demo's steps.", "",
             "| threads | token gradient | GFLOP | forward and backward, ms (median) | GFLOP/s | "
             f"against {first} | floor for {args.steps} steps, s |", "|---|---|---|---|---|---|---|"]
    for threads, variant, median, rate, ratio in rows:
        lines.append(f"| {threads} | {variant} | {gigaflops[variant]:.2f} | {1000 * median:.1f} | {rate:.1f} | "
                     f"{statistics.median(ratio):.2f} ({min(ratio):.2f} to {max(ratio):.2f}) | "
                     f"{args.steps * median:.1f} |")
    lines += ["", f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."]
    print_and_write(lines, RESULTS_DIR / "step_flops.md")


if __name__ == "__main__":
    main()
