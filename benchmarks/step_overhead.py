"""Time of our Textual Inversion step against its physical floor, measured side by side.

Floor: one text-encoder forward, one UNet forward to that conditioning, and the backward pass
through both down to the new embedding rows, on the same batch with everything prepared in advance.
Our step: the marginal time of a step of the real `train()` loop (two runs of different length, the
difference divided by the extra steps, so loading and set-up cancel), plus a breakdown of one step
into data, text encoder, UNet forward, backward, optimizer and the rest (bookkeeping).

    python -m benchmarks.step_overhead [--models miniworld tiny-sd1 tiny-sdxl] [--batch-size 4]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .common import CONCEPTS_DIR, RESULTS_DIR, argument_parser, command, print_and_write


def clock(function, repeats: int) -> float:
    """Median seconds of `function()` over `repeats` calls, after two warm-up calls."""
    for _ in range(2):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def model_and_images(name: str, workdir: Path) -> tuple[str, Path]:
    from PIL import Image, ImageDraw

    if name == "miniworld":
        return "miniworld", CONCEPTS_DIR / "hidden-colour"
    from textual_inversion.tiny import build_tiny_pipeline

    folder = workdir / name
    build_tiny_pipeline(name.removeprefix("tiny-"), folder)
    images = workdir / "images"
    images.mkdir(exist_ok=True)
    for index in range(4):
        image = Image.new("RGB", (48, 48), (200, 40 * index, 30))
        ImageDraw.Draw(image).ellipse((4, 4, 30, 30), fill=(20, 40, 230))
        image.save(images / f"{index}.png")
    return str(folder), images


def measure(name: str, batch_size: int, steps: tuple[int, int], repeats: int, rounds: int, workdir: Path) -> dict:
    from textual_inversion import TrainConfig, train
    from textual_inversion.data import draw_batch, encode_images, read_training_data
    from textual_inversion.methods import TextualInversion
    from textual_inversion.models import load_pipeline
    from textual_inversion.objective import encode_conditioning
    from textual_inversion.training import adamw

    model, images_dir = model_and_images(name, workdir)
    # 1 vector and no moving average: train's defaults when this benchmark was written (common.FORMER_DEFAULTS)
    config = TrainConfig(model=model, images=str(images_dir), token="<bench>", lr=0.01, ema_decay=0.0,
                         options={"init_token": "circle", "vectors": 1}, batch_size=batch_size, checkpoint_every=0,
                         device="cpu", overwrite=True)

    def marginal_step() -> float:
        """Our step: the marginal cost of a step of the real loop."""
        durations = []
        for count in steps:
            start = time.perf_counter()
            train(TrainConfig(**{**config.__dict__, "steps": count, "output_dir": str(workdir / f"{name}-{count}")}))
            durations.append(time.perf_counter() - start)
        return (durations[1] - durations[0]) / (steps[1] - steps[0])

    # The same pieces, set up by hand.
    pipe = load_pipeline(model)
    for module in (pipe.unet, pipe.vae, getattr(pipe, "text_encoder_2", None), pipe.text_encoder):
        if module is not None:
            module.requires_grad_(False).eval()
    resolution = pipe.unet.config.sample_size * pipe.vae_scale_factor
    data = read_training_data(images_dir, config.token, config.property)
    data.caches = encode_images(pipe.vae, data.images, resolution, "center", 1, True, 0, torch.device("cpu"),
                                torch.float32)
    method = TextualInversion(config)
    method.prepare(pipe, data)
    scheduler = pipe.scheduler
    optimizer = adamw([{"params": method.trainable_parameters()}], lr=0.01)  # as train() builds it
    generator = torch.Generator().manual_seed(0)

    def draw():
        return draw_batch(data, batch_size, None, generator, scheduler.config.num_train_timesteps,
                          pipe.vae.config.scaling_factor, 0, 1)

    batch = draw()
    noise, timesteps, prompts, sizes = batch.noise, batch.timesteps, batch.prompts, batch.sizes
    noisy = scheduler.add_noise(batch.latents, noise, timesteps)
    sdxl = hasattr(pipe, "text_encoder_2")

    def encode():
        return encode_conditioning(pipe, prompts, sizes, torch.device("cpu"))

    def forward(conditioning):
        return pipe.unet(noisy, timesteps, **conditioning).sample

    # The floor: prepared token ids go straight into the encoders, then the UNet, then backward.
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if sdxl else [])
    tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if sdxl else [])
    expanded = [pipe.maybe_convert_prompt(p, tokenizers[0]) for p in prompts]
    ids = [t(expanded, padding="max_length", max_length=t.model_max_length, truncation=True,
             return_tensors="pt").input_ids for t in tokenizers]

    def floor_pass():
        if sdxl:
            outputs = [e(i, output_hidden_states=True) for e, i in zip(encoders, ids, strict=True)]
            embeds = torch.cat([o.hidden_states[-2] for o in outputs], dim=-1)
            added = {"text_embeds": outputs[1][0], "time_ids": torch.tensor([list(s) for s in sizes])}  # each 6: original, crop, target
        else:
            embeds, added = encoders[0](ids[0])[0], None
        F.mse_loss(pipe.unet(noisy, timesteps, encoder_hidden_states=embeds, added_cond_kwargs=added).sample,
                   noise).backward()
        optimizer.zero_grad(set_to_none=True)

    def backward_only():
        loss = F.mse_loss(forward(encode()), noise)
        start = time.perf_counter()
        loss.backward()
        elapsed = time.perf_counter() - start
        optimizer.zero_grad(set_to_none=True)
        return elapsed

    def optimizer_step():
        for p in method.trainable_parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # Alternating rounds: a shared host's speed drifts over minutes, so step and floor are compared
    # within each round and the ratio's median is reported.
    step_times, floors, ratios = [], [], []
    for _ in range(rounds):
        step_times.append(marginal_step())
        floors.append(clock(floor_pass, repeats))
        ratios.append(step_times[-1] / floors[-1])
    step, floor = statistics.median(step_times), statistics.median(floors)
    with torch.no_grad():
        parts = {"data": clock(draw, repeats), "text encoder": clock(encode, repeats)}
        encoded = encode()
        parts["UNet forward"] = clock(lambda: forward(encoded), repeats)
    backward_only()
    parts["backward"] = statistics.median(backward_only() for _ in range(repeats))
    parts["optimizer"] = clock(optimizer_step, repeats)
    parts["bookkeeping"] = max(0.0, step - sum(parts.values()))
    method.release()
    return {"model": name, "step": step, "floor": floor, "overhead": statistics.median(ratios) - 1,
            "range": (min(ratios) - 1, max(ratios) - 1), "parts": parts}


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=["miniworld", "tiny-sd1", "tiny-sdxl"])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", nargs=2, type=int, default=(20, 120), help="lengths of the two timed runs")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3, help="alternating step/floor measurements per model")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            rows.append(measure(name, args.batch_size, tuple(args.steps), args.repeats, args.rounds, Path(workdir)))
            print(f"{name}: step {rows[-1]['step'] * 1000:.1f} ms, floor {rows[-1]['floor'] * 1000:.1f} ms, "
                  f"overhead {rows[-1]['overhead']:+.1%}", flush=True)
    names = list(rows[0]["parts"])
    lines = [f"# Textual Inversion step against its floor (CPU, {torch.get_num_threads()} threads, batch {args.batch_size})",
             "", f"Produced by `{command()}`; times are medians in ms, "
             f"measured in one run. Step and floor are timed in {args.rounds} alternating rounds; the overhead is the "
             "median of the rounds' step / floor - 1 (range in brackets). The parts are timed once, after.", "",
             "| model | step | floor | overhead = step / floor - 1 | " + " | ".join(names) + " |",
             "|---|---|---|---|" + "---|" * len(names)]
    for row in rows:
        lines.append(f"| {row['model']} | {row['step'] * 1000:.1f} | {row['floor'] * 1000:.1f} | {row['overhead']:+.1%} ({row['range'][0]:+.1%} to {row['range'][1]:+.1%}) | "
                     + " | ".join(f"{row['parts'][n] * 1000:.1f}" for n in names) + " |")
    print_and_write(lines, RESULTS_DIR / "step_overhead.md")


if __name__ == "__main__":
    main()
