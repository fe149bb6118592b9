"""AdamW's fused kernel against PyTorch's default implementation, per method, measured side by side.

On the CPU PyTorch's default AdamW loops over the trainable tensors, one pass per arithmetic operation; the
fused kernel makes one pass over each tensor. What that is worth depends on how much a method trains: a few
embedding rows (textual inversion), LoRA's matrices, or a whole UNet (DreamBooth). For each method this
times, on miniworld, in alternating rounds in one process:
- the optimizer step alone, over the method's trainable parameters with random gradients;
- the marginal time of a step of the real `train()` loop (two runs of different length, the difference
  divided by the extra steps, so loading and set-up cancel);
and, after the longer run, how far apart the two implementations' trained parameters ended (the same seed).
Written to benchmarks/results/optimizer_speed.md.

    python -m benchmarks.optimizer_speed [--methods textual-inversion lora dreambooth] [--rounds 3]
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from .common import (
    CONCEPTS_DIR,
    RESULTS_DIR,
    argument_parser,
    command,
    machine,
    print_and_write,
    takes_init_token,
    with_former_defaults,
)

IMPLEMENTATIONS = ("default", "fused")
# Each method as benchmarks/methods.py sets it for miniworld; DreamBooth without prior preservation, whose 20
# class pictures would be drawn again for every timed run and change nothing about the optimizer.
SETTINGS = {
    "textual-inversion": {"lr": 0.02},
    "lora": {"lr": 1e-3, "rank": 8},
    "pivotal": {"lr": 0.02, "lora_lr": 1e-3, "rank": 8, "ti_fraction": 0.5},
    "dreambooth": {"lr": 5e-5},
}


def using(implementation: str):
    """Make `train` build the optimizer `implementation` names (the fused kernel only where its devices list allows)."""
    from textual_inversion import training

    training.FUSED_ADAMW_DEVICES = ("cpu", "cuda") if implementation == "fused" else ()


def run_config(method: str, steps: int, output: Path, batch_size: int, threads: int):
    from textual_inversion import TrainConfig

    return TrainConfig.from_values(with_former_defaults(dict(
        images=str(CONCEPTS_DIR / "hidden-colour"), token="<bench>", method=method, steps=steps,
        batch_size=batch_size, seed=0, checkpoint_every=0, output_dir=str(output), overwrite=True, threads=threads,
        **({"init_token": "circle"} if takes_init_token(method) else {}), **SETTINGS[method])))


def marginal_step(method: str, implementation: str, steps: tuple[int, int], workdir: Path, batch_size: int,
                  threads: int) -> tuple[float, list]:
    """Seconds per step of the real loop, and the trained parameters after the longer run."""
    from textual_inversion import train
    from textual_inversion.methods import get_method
    from textual_inversion.models import load_pipeline

    using(implementation)
    durations, parameters = [], None
    for count in steps:
        pipe = load_pipeline("miniworld")
        config = run_config(method, count, workdir / f"{method}-{implementation}-{count}", batch_size, threads)
        start = time.perf_counter()
        train(config, pipe)
        durations.append(time.perf_counter() - start)
        parameters = trained_state(get_method(method), pipe, config)
    return (durations[1] - durations[0]) / (steps[1] - steps[0]), parameters


def trained_state(method_class, pipe, config) -> list:
    """What the run changed in `pipe`: the UNet's weights for DreamBooth, the new embedding rows and any LoRA
    weights otherwise (by name, so the two implementations' runs compare entry by entry)."""
    import torch

    state = {f"unet.{name}": value for name, value in pipe.unet.state_dict().items()
             if method_class.name != "textual-inversion" and ("lora" in name or method_class.name == "dreambooth")}
    token_ids = pipe.tokenizer.convert_tokens_to_ids([t for t in pipe.tokenizer.get_added_vocab()
                                                      if t.startswith(config.token.strip("<>")) or t == config.token])
    if token_ids:
        state["embeddings"] = pipe.text_encoder.get_input_embeddings().weight[token_ids]
    return [(name, value.detach().float().clone()) for name, value in sorted(state.items())
            if torch.is_floating_point(value)]


def optimizer_step_alone(method: str, implementation: str, repeats: int, batch_size: int) -> tuple[float, int]:
    """Median seconds of one optimizer step over the method's trainable parameters, and their count."""
    import torch

    from textual_inversion import training
    from textual_inversion.data import read_training_data
    from textual_inversion.methods import get_method
    from textual_inversion.models import load_pipeline

    using(implementation)
    pipe = load_pipeline("miniworld")
    config = run_config(method, 1, Path(tempfile.gettempdir()), batch_size, 1)
    instance = get_method(method)(config)
    instance.prepare(pipe, read_training_data(config.images, config.token, config.property))
    try:
        groups = instance.parameter_groups(config.learning_rate())
        optimizer = training.adamw(groups, **training.optimizer_options(config))
        parameters = [p for group in groups for p in group["params"]]
        for parameter in parameters:
            parameter.grad = torch.randn_like(parameter) * 1e-3
        times = []
        for index in range(repeats + 2):  # two warm-up steps
            start = time.perf_counter()
            optimizer.step()
            if index >= 2:
                times.append(time.perf_counter() - start)
        return statistics.median(times), sum(p.numel() for p in parameters)
    finally:
        instance.release()


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--methods", nargs="+", default=["textual-inversion", "lora", "pivotal", "dreambooth"])
    parser.add_argument("--steps", nargs=2, type=int, default=(10, 60), help="lengths of the two timed runs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30, help="optimizer steps timed alone, per round")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    alone = {(m, i): [] for m in args.methods for i in IMPLEMENTATIONS}
    steps = {(m, i): [] for m in args.methods for i in IMPLEMENTATIONS}
    counts, apart = {}, {}
    with tempfile.TemporaryDirectory() as workdir:
        for round_index in range(args.rounds):
            # Alternating, and the order flipped every round: a shared host's pace drifts over minutes.
            order = IMPLEMENTATIONS if round_index % 2 == 0 else IMPLEMENTATIONS[::-1]
            for method in args.methods:
                trained = {}
                for implementation in order:
                    seconds, counts[method] = optimizer_step_alone(method, implementation, args.repeats,
                                                                   args.batch_size)
                    alone[method, implementation].append(seconds)
                    seconds, trained[implementation] = marginal_step(method, implementation, tuple(args.steps),
                                                                     Path(workdir), args.batch_size, args.threads)
                    steps[method, implementation].append(seconds)
                    print(f"round {round_index} {method} {implementation}: optimizer {alone[method, implementation][-1] * 1000:.2f} ms, "
                          f"step {seconds * 1000:.1f} ms", flush=True)
                apart[method] = max((a - b).abs().max().item() for (_, a), (_, b)
                                    in zip(trained["default"], trained["fused"], strict=True))
    using("fused")

    lines = [f"# AdamW fused against PyTorch's default, per method (miniworld, {machine('cpu', args.threads)}, "
             f"batch {args.batch_size})", "",
             f"Produced by `{command()}`. Times are medians over {args.rounds} alternating rounds (each round's order "
             "flipped), in ms; the ratio is the median of the rounds' fused / default. Optimizer alone: "
             f"{args.repeats} steps over the method's trainable parameters with random gradients. Step: the marginal "
             f"time of a step of `train()` ({args.steps[0]} and {args.steps[1]} steps, difference / "
             f"{args.steps[1] - args.steps[0]}). Apart: the largest difference between the two implementations' "
             f"trained parameters after {args.steps[1]} steps, same seed (last round). DreamBooth here without prior "
             "preservation.", "",
             "| method | trainable parameters | optimizer alone: default | fused | ratio | step: default | fused | ratio "
             "| apart after the longer run |", "|---|---|---|---|---|---|---|---|---|"]
    for method in args.methods:
        def ratio(table, method=method):
            return statistics.median(f / d for f, d in zip(table[method, "fused"], table[method, "default"],
                                                            strict=True))
        lines.append(
            f"| {method} | {counts[method]:,} | {statistics.median(alone[method, 'default']) * 1000:.2f} | "
            f"{statistics.median(alone[method, 'fused']) * 1000:.2f} | {ratio(alone):.2f}x | "
            f"{statistics.median(steps[method, 'default']) * 1000:.1f} | {statistics.median(steps[method, 'fused']) * 1000:.1f} | "
            f"{ratio(steps):.2f}x | {apart[method]:.1e} |")
    lines += ["", f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."]
    print_and_write(lines, RESULTS_DIR / "optimizer_speed.md")


if __name__ == "__main__":
    main()
