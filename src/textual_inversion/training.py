"""The one training loop shared by every method.

Read top to bottom: load the model, freeze it, let the method add its parameters, encode the images
once, then per step: sample cached latents, add noise, predict it, step the optimizer. Around that:
previews, checkpoints, resume, Ctrl-C, loss files. All sampling draws from one CPU generator whose
state is checkpointed, so a resumed run is bit-identical to an uninterrupted one on the CPU.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from . import __version__
from .checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import encode_images, list_images, load_rgb, make_captions
from .errors import UserError
from .generation import save_grid
from .methods import METHODS
from .models import load_pipeline, model_family, pick_device
from .rundir import (
    PREVIEW_DIR,
    RunLock,
    check_output_dir,
    clear_previous_run,
    create_output_dir,
    remove_stale_temporaries,
    write_loss_files,
    write_run_file,
)

logger = logging.getLogger(__name__)

WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class TrainResult:
    """What a finished run produced."""

    output_dir: Path
    outputs: list[Path]  # what the method wrote: embedding file, LoRA file(s), pipeline folder
    steps: int
    final_loss: float
    seconds: float
    loss_history: list[tuple[int, float, float]] = field(default_factory=list)
    stopped_early: bool = False
    stopped: bool = False  # ended by `stop` before its last step: a checkpoint to resume from, no final files

    @property
    def embedding_path(self) -> Path | None:
        """The learned embedding file, for methods that write one."""
        return next((path for path in self.outputs if path.name == "learned_embeds.safetensors"), None)


def train(config: TrainConfig, pipe=None, stop: threading.Event | None = None,
          on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train a concept as `config` says; returns where the result is.

    `pipe` lets a caller pass an already loaded pipeline: its pretrained weights are not changed,
    and afterwards it holds what was learned (the new token, the LoRA, the tuned UNet). By default
    the pipeline is loaded from `config.model`. Every input is checked before anything is written.
    For callers in another thread (the web page): `on_step(step, loss)` reports each step, and
    setting `stop` ends the run before its next step with a resumable checkpoint (`result.stopped`).
    """
    config.validate()
    device = pick_device(config.device)
    if config.mixed_precision == "fp16" and device.type != "cuda":
        raise UserError("--mixed-precision fp16 needs a CUDA GPU; on this device use bf16 or no")
    make_optimizer(config)  # says now, before anything is written, if bitsandbytes is missing
    # Under `accelerate launch` this joins the process group; alone it is one process.
    processes = PartialState(cpu=device.type == "cpu")
    if config.batch_size % processes.num_processes:
        raise UserError(f"--batch-size {config.batch_size} is the global batch and must split evenly over "
                        f"{processes.num_processes} processes")
    image_paths = list_images(config.images)
    if len(image_paths) == 1 and config.method != "hyperdreambooth":  # HyperDreamBooth is made for one image
        logger.warning("--images %s: only one image; 3-5 varied pictures give a better concept", config.images)
    images = [load_rgb(path) for path in image_paths]
    captions = make_captions(image_paths, config.token, config.property)
    if pipe is None:
        pipe = load_pipeline(config.model, config.model_config)
    for module in (pipe.unet, pipe.vae, getattr(pipe, "text_encoder_2", None), pipe.text_encoder):
        if module is not None:
            module.requires_grad_(False).eval()
    method = METHODS[config.method](config)
    try:
        method.prepare(pipe)  # checks the token against the vocabulary, adds what learns
        output_dir = check_output_dir(config)
        processes.wait_for_everyone()  # every process has checked before the main one writes
        with RunLock(create_output_dir(output_dir)) if processes.is_main_process else contextlib.nullcontext():
            if processes.is_main_process:
                remove_stale_temporaries(output_dir)
                if config.overwrite and not config.resume:
                    clear_previous_run(output_dir)
            processes.wait_for_everyone()
            return run_training(config, method, pipe, device, images, captions, output_dir, stop, on_step)
    finally:
        method.release()  # the caller's pipeline keeps what was learned, even after an error


def run_training(config: TrainConfig, method, pipe, device: torch.device, images: list, captions: list[list[str]],
                 output_dir: Path, stop: threading.Event | None = None,
                 on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    started = time.monotonic()
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # Accelerator picks the current CUDA device
    # Accelerate keeps one process-wide state; a second run in the same Python process with another
    # precision must reset it (the distributed part, PartialState, is kept).
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=device.type == "cpu")
    weight_dtype = WEIGHT_DTYPES[config.mixed_precision]
    pipe.set_progress_bar_config(disable=True)
    resolution = config.resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    pipe.to(accelerator.device)
    cache = encode_images(pipe.vae, images, resolution, config.crop, config.crop_variants, config.flip,
                          config.seed, accelerator.device, torch.float32)
    class_cache = None
    if config.class_prompt:  # prior preservation: the model's own pictures of the class
        # The method is prepared already, but changes nothing yet (LoRA's B matrices start at zero).
        if accelerator.is_main_process:
            ensure_class_images(pipe, config, output_dir / "class_images")
        accelerator.wait_for_everyone()
        class_images = ensure_class_images(pipe, config, output_dir / "class_images")  # reads what is there
        class_cache = encode_images(pipe.vae, class_images, resolution, "center", 1, False, config.seed,
                                    accelerator.device, torch.float32)
    if weight_dtype != torch.float32:
        pipe.to(dtype=weight_dtype)
    for parameter in method.trainable_parameters():
        parameter.data = parameter.data.float()

    speed_options(pipe, config)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    scale = config.batch_size * config.grad_accum if config.scale_lr else 1  # --batch-size is the global batch
    optimizer = make_optimizer(config)(method.parameter_groups(config.learning_rate() * scale),
                                       weight_decay=config.weight_decay)
    lr_schedule = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps,
                                num_training_steps=config.steps)
    optimizer = accelerator.prepare(optimizer)
    generator = torch.Generator().manual_seed(config.seed)

    start_step, history, validation = 0, [], []
    if config.resume:
        checkpoint = latest_checkpoint(output_dir)
        weights, state = load_checkpoint(checkpoint)
        method.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        generator.set_state(state["generator"])
        start_step, history = state["step"], [tuple(row) for row in state["history"]]
        validation = list(state.get("validation", []))
        logger.info("resuming from %s (step %d)", checkpoint, start_step)

    metadata = {"base_model": config.model, "family": model_family(pipe), "method": method.name,
                "token": config.token, "vectors": str(config.vectors), "init_token": config.init_token,
                "property": config.property, "seed": str(config.seed), "lr": str(config.learning_rate()),
                "resolution": str(resolution), "tool_version": __version__}
    main = accelerator.is_main_process  # only the main process writes files
    if main:
        write_run_file(output_dir, config, "running", {"metadata": metadata})
    # With several processes every one draws the same global batch from the shared generator and
    # trains on its share; averaged gradients then equal those of the global batch on one process.
    share = config.batch_size // accelerator.num_processes
    mine = slice(accelerator.process_index * share, (accelerator.process_index + 1) * share)

    def training_state(step: int) -> dict:
        return {"optimizer": optimizer.state_dict(), "lr_schedule": lr_schedule.state_dict(), "step": step,
                "generator": generator.get_state(), "history": history, "validation": validation}

    def draw_batch(source: torch.Generator):
        """The global batch (instance images, then class images) drawn from `source`; this process's rows."""
        entries = torch.randint(len(cache.image_index), (config.batch_size,), generator=source)
        latents = cache.sample(entries, source, pipe.vae.config.scaling_factor)
        prompts = [pick(captions[cache.image_index[e]], source) for e in entries.tolist()]
        sizes = cache.size_conditions(entries)
        if class_cache is not None:
            class_entries = torch.randint(len(class_cache.image_index), (config.batch_size,), generator=source)
            latents = torch.cat([latents, class_cache.sample(class_entries, source, pipe.vae.config.scaling_factor)])
            prompts += [config.class_prompt] * config.batch_size
            sizes += class_cache.size_conditions(class_entries)
        noise = torch.randn(latents.shape, generator=source)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(latents),), generator=source)
        rows = list(range(config.batch_size))[mine]
        if class_cache is not None:
            rows += [config.batch_size + row for row in rows]
        return latents[rows], noise[rows], timesteps[rows], [prompts[r] for r in rows], [sizes[r] for r in rows]

    def batch_loss(latents, noise, timesteps, prompts, sizes) -> torch.Tensor:
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        if noise_scheduler.config.prediction_type == "v_prediction":
            target = noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        with accelerator.autocast():
            prediction = predict_noise(pipe, noisy.to(accelerator.device, weight_dtype),
                                       timesteps.to(accelerator.device), prompts, sizes, resolution)
            errors = F.mse_loss(prediction.float(), target.to(accelerator.device).float(),
                                reduction="none").mean(dim=(1, 2, 3))
            loss = errors[:share].mean()
            if class_cache is not None:
                loss = loss + config.prior_loss_weight * errors[share:].mean()
        return loss

    def averaged(value: float) -> float:
        if accelerator.num_processes == 1:
            return value
        return accelerator.reduce(torch.tensor(value, device=accelerator.device), "mean").item()

    def one_step() -> float:
        total = 0.0
        for _ in range(config.grad_accum):
            loss = batch_loss(*draw_batch(generator))
            accelerator.backward(loss / config.grad_accum)
            total += loss.item() / config.grad_accum
        if accelerator.num_processes > 1:
            for parameter in method.trainable_parameters():
                if parameter.grad is not None:
                    parameter.grad = accelerator.reduce(parameter.grad, "mean")
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if hasattr(method, "step_finished"):
            method.step_finished()
        return averaged(total)

    # DVAR-style early stop: the loss on one fixed batch (its own generator, so training draws are
    # untouched) flattens out when the concept is learned; stop when its recent variance is a small
    # fraction of its variance over the whole run.
    fixed_batch = draw_batch(torch.Generator().manual_seed(config.seed + 1)) if config.early_stop_window else None

    def validation_loss() -> float:
        with torch.no_grad():
            return averaged(batch_loss(*fixed_batch).item())

    def save_resumable_state(step: int, status: str) -> Path:
        """A run ended before its last step (Ctrl-C or `stop`): checkpoint, loss files, run.json with `status`."""
        path = save_checkpoint(output_dir, step, method.state_dict(), training_state(step), config.keep_checkpoints)
        write_loss_files(output_dir, history)
        write_run_file(output_dir, config, status, {"step": step})
        return path

    step, stopped_early, stop_requested = start_step, False, False
    progress = tqdm(total=config.steps, initial=start_step, desc=f"training {config.token}", unit="step",
                    disable=not accelerator.is_local_main_process)
    try:
        while step < config.steps:
            if stop is not None and stop.is_set():
                stop_requested = True
                break
            if hasattr(method, "step_started"):
                method.step_started(step)
            loss = one_step()
            if not math.isfinite(loss):
                previous = latest_checkpoint(output_dir)
                kept = f"the last good checkpoint is {previous}" if previous else "no checkpoint was written yet"
                raise UserError(f"loss became {loss} at step {step + 1}; {kept}. Lower --lr or use "
                                "--mixed-precision no, then --resume or start again")
            step += 1
            history.append((step, loss, lr_schedule.get_last_lr()[0]))
            if on_step is not None:
                on_step(step, loss)
            if fixed_batch is not None:
                validation.append(validation_loss())
                if variance_has_settled(validation, config.early_stop_window, config.early_stop_threshold):
                    logger.info("early stop at step %d: the fixed-batch loss has settled", step)
                    stopped_early = True
                    progress.update(1)
                    break
            progress.update(1)
            progress.set_postfix(loss=f"{sum(r[1] for r in history[-20:]) / len(history[-20:]):.4f}")
            if main and config.validation_prompt and step % config.validation_every == 0:
                render_previews(pipe, config, output_dir / PREVIEW_DIR / f"step-{step:06d}.png")
            if main and config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
                save_checkpoint(output_dir, step, method.state_dict(), training_state(step), config.keep_checkpoints)
    except KeyboardInterrupt:
        progress.close()
        if not main:
            raise
        path = save_resumable_state(step, "interrupted")
        raise UserError(f"interrupted at step {step}; saved {path}; continue with the same command and --resume") from None
    progress.close()

    metadata.update(steps=str(step), stopped_early=str(stopped_early), created=datetime.now(UTC).isoformat(timespec="seconds"))
    final_loss = sum(r[1] for r in history[-20:]) / max(1, len(history[-20:]))
    if stop_requested:  # as after Ctrl-C, but a normal return: the caller asked for it
        if main:
            save_resumable_state(step, "stopped")
        accelerator.wait_for_everyone()
        return TrainResult(output_dir, [], step, final_loss, time.monotonic() - started, history, stopped=True)
    outputs = []
    if main:
        outputs = method.save(output_dir, metadata)
        save_checkpoint(output_dir, step, method.state_dict(), training_state(step), config.keep_checkpoints)
        write_loss_files(output_dir, history)
        if config.validation_prompt and step % config.validation_every:
            render_previews(pipe, config, output_dir / PREVIEW_DIR / f"step-{step:06d}.png")
        write_run_file(output_dir, config, "finished", {"metadata": metadata, "final_loss": final_loss})
    accelerator.wait_for_everyone()
    return TrainResult(output_dir, outputs, step, final_loss, time.monotonic() - started, history, stopped_early)


def variance_has_settled(losses: list[float], window: int, threshold: float) -> bool:
    """DVAR's criterion: var(last `window` losses) < threshold x var(all losses), once 2 windows are in."""
    if len(losses) < 2 * window:
        return False
    recent = torch.tensor(losses[-window:], dtype=torch.float64)
    return bool(recent.var() < threshold * torch.tensor(losses, dtype=torch.float64).var())


def make_optimizer(config: TrainConfig):
    """AdamW, or bitsandbytes' 8-bit AdamW with --use-8bit-adam."""
    if not config.use_8bit_adam:
        return torch.optim.AdamW
    try:
        import bitsandbytes
    except ImportError:
        raise UserError("--use-8bit-adam needs bitsandbytes: pip install bitsandbytes (CUDA GPUs)") from None
    return bitsandbytes.optim.AdamW8bit


def speed_options(pipe, config: TrainConfig) -> None:
    """Gradient checkpointing, channels-last and torch.compile, each only when asked for."""
    if config.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
        for encoder in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
            if encoder is not None:
                encoder.gradient_checkpointing_enable()
    if config.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    if config.compile:
        pipe.unet.compile()  # in place: parameter names (and so checkpoints) stay the same


def pick(options: list[str], generator: torch.Generator) -> str:
    return options[int(torch.randint(len(options), (1,), generator=generator))]


def predict_noise(pipe, noisy, timesteps, prompts: list[str], size_conditions: list[tuple], resolution: int):
    """The UNet's prediction for `noisy` at `timesteps`, conditioned on `prompts` (SD or SDXL).

    `size_conditions` are SDXL's (original height, width, crop top, left) per sample.
    """
    device = noisy.device
    if not hasattr(pipe, "text_encoder_2"):
        prompt_embeds, _ = pipe.encode_prompt(prompts, device, 1, False)
        return pipe.unet(noisy, timesteps, encoder_hidden_states=prompt_embeds).sample
    prompt_embeds, _, pooled, _ = pipe.encode_prompt(prompts, device=device, num_images_per_prompt=1,
                                                     do_classifier_free_guidance=False)
    time_ids = torch.tensor([[*size, resolution, resolution] for size in size_conditions], device=device,
                            dtype=prompt_embeds.dtype)
    return pipe.unet(noisy, timesteps, encoder_hidden_states=prompt_embeds,
                     added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample


@torch.no_grad()
def ensure_class_images(pipe, config: TrainConfig, folder: Path) -> list:
    """`num_class_images` pictures of `class_prompt` by the frozen model, made once and kept in `folder`."""
    from PIL import Image

    from .generation import save_png

    folder.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(config.num_class_images) if not (folder / f"{i:04d}.png").is_file()]
    for index in tqdm(missing, desc="class images", unit="image", disable=not missing):
        image = pipe(config.class_prompt, num_inference_steps=config.validation_steps,
                     guidance_scale=config.validation_guidance,
                     generator=torch.Generator().manual_seed(config.seed + index)).images[0]
        save_png(image, folder / f"{index:04d}.png", f"{config.class_prompt}\nSeed: {config.seed + index}")
    return [Image.open(folder / f"{i:04d}.png").convert("RGB") for i in range(config.num_class_images)]


@torch.no_grad()
def render_previews(pipe, config: TrainConfig, path: Path) -> None:
    """Sample preview images with the current embedding, fixed seed, and save them as one grid."""
    generator = torch.Generator().manual_seed(config.seed)
    images = pipe(config.validation_prompt, num_inference_steps=config.validation_steps,
                  guidance_scale=config.validation_guidance,
                  num_images_per_prompt=config.num_validation_images, generator=generator).images
    save_grid(images, path)
