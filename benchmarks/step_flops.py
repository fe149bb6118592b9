"""How much arithmetic the demo's training step is, and how fast this CPU does it: the floor under the demo's time.

Counts the floating-point operations of miniworld's UNet forward and backward at the demo's batch (4 pictures at
64 px, 16x16 latents; the gradient flows to the conditioning only, as in textual inversion, where the UNet is
frozen) with PyTorch's FlopCounterMode, then times the same forward and backward at each thread count. Their
product with the demo's step count is the time its training cannot go below at the demo's settings, whatever
the loop around the UNet does.

    python -m benchmarks.step_flops [--threads 1 2] [--repeats 20] [--steps 800]
"""

from __future__ import annotations

import os
import statistics
import time

from .common import RESULTS_DIR, argument_parser, command, print_and_write


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=20, help="timed forward-and-backward passes per thread count")
    parser.add_argument("--steps", type=int, default=800, help="the demo's step count")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from textual_inversion.demo import DEMO_TRAINING
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

    def forward_and_backward() -> None:
        unet(latents, timesteps, conditioning).sample.square().mean().backward()

    with FlopCounterMode(display=False) as counter:
        forward_and_backward()
    gigaflops = counter.get_total_flops() / 1e9
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for _ in range(3):
            forward_and_backward()
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            forward_and_backward()
            seconds.append(time.perf_counter() - started)
        median = statistics.median(seconds)
        rows.append((threads, median, gigaflops / median))
    lines = [f"# The demo's training step: arithmetic and the floor it sets (CPU, {os.cpu_count()} cores)", "",
             f"Produced by `{command()}`. miniworld's UNet forward and backward at the demo's batch ({batch} "
             f"pictures, {side}x{side} latents, the gradient to the conditioning only), counted by PyTorch's "
             f"FlopCounterMode: {gigaflops:.2f} GFLOP a step. Timed {args.repeats} times per thread count after 3 "
             "warm-up passes; the floor is the median times the demo's steps.", "",
             "| threads | forward and backward, ms (median) | GFLOP/s | floor for "
             f"{args.steps} steps, s |", "|---|---|---|---|"]
    for threads, median, rate in rows:
        lines.append(f"| {threads} | {1000 * median:.1f} | {rate:.1f} | {args.steps * median:.1f} |")
    lines += ["", f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."]
    print_and_write(lines, RESULTS_DIR / "step_flops.md")


if __name__ == "__main__":
    main()
