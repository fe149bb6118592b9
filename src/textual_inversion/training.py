"""The one training loop shared by every method.

Read top to bottom: `train` checks everything, loads the pictures and the model, encodes the pictures
once and lets the method add what learns; `run_training` is the loop: per step it draws cached latents,
noise and timesteps, computes the denoising loss (`objective.py`), and steps the optimizer. Around that:
previews, checkpoints, resume, Ctrl-C, loss files. All sampling draws from one CPU generator whose state
is checkpointed, so a resumed run is bit-identical to an uninterrupted one on the CPU.
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
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from . import __version__
from .buckets import picture_sizes, size_step
from .checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import (
    Batch,
    LatentCache,
    TrainingData,
    draw_batch,
    encode_images,
    read_training_data,
    timestep_bias,
)
from .errors import UserError
from .generation import save_grid, using_sampler
from .learned_check import learned_check, learned_share, should_stop
from .methods import Method, get_method
from .models import (
    default_resolution,
    denoiser,
    guidance_scale,
    is_transformer_family,
    load_pipeline,
    model_family,
    pick_device,
    prompt_arguments,
    text_encoders,
    use_threads,
)
from .objective import DenoisingLoss, batch_loss, training_scheduler
from .outputs import EMBEDDING
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
    outputs: dict[str, Path]  # what the method wrote, by kind (outputs.py): embedding, LoRA, pipeline folder
    steps: int
    final_loss: float
    seconds: float
    loss_history: list[tuple[int, float, float]] = field(default_factory=list)
    stopped_early: bool = False
    stopped: bool = False  # ended by `stop` before its last step: a checkpoint to resume from, no final files
    # Seconds by phase: loading the model, preparing (moving it, encoding the pictures, setting up the method),
    # the steps (with their previews, checks and checkpoints) and writing the files; see `phase_summary`.
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def embedding_path(self) -> Path | None:
        """The learned embedding file, for methods that write one."""
        return self.outputs.get(EMBEDDING)


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
    method_class = get_method(config.method)
    device = pick_device(config.device)
    use_threads(config.threads)
    if config.mixed_precision == "fp16" and device.type != "cuda":
        raise UserError("--mixed-precision fp16 needs a CUDA GPU; on this device use bf16 or no")
    make_optimizer(config)  # says now, before anything is written, if bitsandbytes is missing
    processes = process_state(device)
    if config.batch_size % processes.num_processes:
        raise UserError(f"--batch-size {config.batch_size} is the global batch and must split evenly over "
                        f"{processes.num_processes} processes")
    data = read_training_data(config.images, config.token, config.property)
    if len(data.images) == 1 and not method_class.one_image:
        logger.warning("--images %s: only one image; 3-5 varied pictures give a better concept", config.images)
    output_dir = check_output_dir(config)
    loading_started = time.monotonic()
    if pipe is None:
        pipe = load_pipeline(config.model, config.model_config, quantize=config.quantize_transformer)
    loading_seconds = time.monotonic() - loading_started
    if is_transformer_family(pipe) and not method_class.transformer_families:
        raise UserError(f"--method {config.method}: not available for {model_family(pipe)} models; use "
                        "textual-inversion, lora or pivotal")
    if is_transformer_family(pipe) and config.timestep_bias != "none":  # their indices run from noise to clean
        raise UserError(f"--timestep-bias works on UNet models (SD 1.x/2.x, SDXL, miniworld); {model_family(pipe)} "
                        "draws its noise levels from its own density: leave the option out")
    if is_transformer_family(pipe) and config.validation_sampler:
        raise UserError(f"--validation-sampler {config.validation_sampler}: {model_family(pipe)} samples with its own "
                        "flow-matching scheduler; leave the option out")
    if is_transformer_family(pipe) and config.snr_gamma:
        raise UserError(f"--snr-gamma weights a UNet model's noise schedule (SD 1.x/2.x, SDXL, miniworld); "
                        f"{model_family(pipe)} trains by flow matching: leave the option out")
    if config.timestep_bias == "range" and config.timestep_bias_end > pipe.scheduler.config.num_train_timesteps:
        raise UserError(f"--timestep-bias-end {config.timestep_bias_end}: this model's schedule has "
                        f"{pipe.scheduler.config.num_train_timesteps} timesteps")
    for module in [encoder for _, _, encoder in text_encoders(pipe)] + [denoiser(pipe), pipe.vae]:
        module.requires_grad_(False).eval()

    started = time.monotonic()
    accelerator = make_accelerator(config, device, method_class.parameters_may_go_unused)
    pipe.set_progress_bar_config(disable=True)
    move_to_device(pipe, accelerator.device, WEIGHT_DTYPES[config.mixed_precision])
    resolution = config.resolution or default_resolution(pipe)
    data.caches = encode_pictures(pipe, data, config, resolution, accelerator.device)
    method = method_class(config)
    try:
        method.prepare(pipe, data)  # checks the token against the vocabulary, adds what learns
        report_settings(config, method)
        report_shapes(data)
        processes.wait_for_everyone()  # every process has checked before the main one writes
        with RunLock(create_output_dir(output_dir)) if processes.is_main_process else contextlib.nullcontext():
            if processes.is_main_process:
                remove_stale_temporaries(output_dir)
                if config.overwrite and not config.resume:
                    clear_previous_run(output_dir)
            processes.wait_for_everyone()
            if config.class_prompt:  # prior preservation: the frozen model's own pictures of the class
                # The method is prepared already, but changes nothing yet (LoRA's B matrices start at zero).
                data.class_caches = class_latents(pipe, config, output_dir / "class_images", accelerator,
                                                  [cache.target_size[::-1] for cache in data.caches])
            return run_training(config, method, pipe, accelerator, data, resolution, output_dir, started,
                                stop, on_step, loading_seconds)
    finally:
        method.release()  # the caller's pipeline keeps what was learned, even after an error


def process_state(device: torch.device) -> PartialState:
    """Accelerate's state of this process: under `accelerate launch` it joins the process group; alone it is one
    process. The state is process-wide and kept from the first run, so a later run in the same Python process (the
    web page, a notebook, the tests) on another device would train where the first one did: a one-process state
    made for another device is made again."""
    state = PartialState(cpu=device.type == "cpu")
    if state.num_processes == 1 and state.device.type != device.type:
        PartialState._reset_state()
        state = PartialState(cpu=device.type == "cpu")
    return state


def make_accelerator(config: TrainConfig, device: torch.device, parameters_may_go_unused: bool) -> Accelerator:
    """An Accelerator for this run's precision on `device`; see `Method.parameters_may_go_unused`."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # Accelerator picks the current CUDA device
    # Accelerate keeps one process-wide state; a second run in the same Python process with another
    # precision must reset it (the distributed part, PartialState, is kept).
    AcceleratorState._reset_state(reset_partial_state=False)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=parameters_may_go_unused)
    return Accelerator(mixed_precision=config.mixed_precision, cpu=device.type == "cpu", kwargs_handlers=[ddp])


def run_training(config: TrainConfig, method: Method, pipe, accelerator: Accelerator, data: TrainingData,
                 resolution: int, output_dir: Path, started: float, stop: threading.Event | None = None,
                 on_step: Callable[[int, float], None] | None = None, loading_seconds: float = 0.0) -> TrainResult:
    """The loop: optimizer steps from the start (or the latest checkpoint) to `config.steps`, then the files.
    `started`: when train() began preparing (after loading the model, which took `loading_seconds`)."""
    weight_dtype = WEIGHT_DTYPES[config.mixed_precision]
    move_to_device(pipe, accelerator.device, weight_dtype, vae_dtype=weight_dtype)
    for parameter in method.trainable_parameters():
        parameter.data = parameter.data.float()
    speed_options(pipe, config)

    noise_scheduler = training_scheduler(pipe)
    scale = config.batch_size * config.grad_accum if config.scale_lr else 1  # --batch-size is the global batch
    optimizer = make_optimizer(config)(method.parameter_groups(config.learning_rate() * scale),
                                       **optimizer_options(config))
    lr_schedule = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps,
                                num_training_steps=config.steps)
    loss_module = DenoisingLoss(pipe, noise_scheduler, config.mask_weight, config.snr_gamma)
    model, optimizer = accelerator.prepare(loss_module, optimizer)
    generator = torch.Generator().manual_seed(config.seed)
    step, history, fixed_losses = 0, [], []
    learned_checks = []  # --stop-when-learned: (step, share of the check's images that show the concept)
    # --ema-decay: the moving average of what learns, in the order of method.trainable_parameters()
    moving_average = [p.detach().clone() for p in method.trainable_parameters()] if config.ema_decay else None
    if config.resume:
        checkpoint = latest_checkpoint(output_dir)
        weights, state = load_checkpoint(checkpoint)
        method.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        generator.set_state(state["generator"])
        step, history = state["step"], [tuple(row) for row in state["history"]]
        # (step, loss) rows; checkpoints of earlier versions held bare losses, one per step from step 1
        fixed_losses = [tuple(row) if isinstance(row, (list, tuple)) else (index + 1, row)
                        for index, row in enumerate(state.get("validation", []))]
        learned_checks = [tuple(row) for row in state.get("learned_checks", [])]
        if moving_average is not None:  # a checkpoint written without --ema-decay: the average starts here
            set_values(moving_average, state.get("ema") or method.trainable_parameters())
        logger.info("resuming from %s (step %d)", checkpoint, step)

    timestep_chances = None
    if config.timestep_bias != "none":
        timestep_chances = timestep_bias(noise_scheduler.config.num_train_timesteps, config.timestep_bias,
                                         config.timestep_bias_portion, config.timestep_bias_multiplier,
                                         config.timestep_bias_begin, config.timestep_bias_end)

    def draw(source: torch.Generator, step: int) -> Batch:
        """The batch of step `step` (counted from 0)."""
        biased = config.timestep_bias_steps == 0 or step < config.timestep_bias_steps
        return draw_batch(data, config.batch_size, config.class_prompt, source,
                          noise_scheduler.config.num_train_timesteps, pipe.vae.config.scaling_factor,
                          accelerator.process_index, accelerator.num_processes,
                          getattr(pipe.vae.config, "shift_factor", None) or 0.0,
                          stratified=config.timesteps == "stratified",
                          timestep_chances=timestep_chances if biased else None,
                          antithetic=config.noise_sampling == "antithetic")

    def averaged(value: torch.Tensor) -> torch.Tensor:
        """`value` averaged over the processes (each computed it on its share of the batch); not read yet."""
        if accelerator.num_processes == 1:
            return value
        return accelerator.reduce(value, "mean")

    unread = []  # (step, loss on the device, lr) of the steps whose loss is not in `history` yet

    def read_losses() -> None:
        """Move the unread losses into `history`, in one read from the device; a non-finite one ends the run.
        Checkpoints are written only after a read, so the one the message names was written before it."""
        values = torch.stack([loss for _, loss, _ in unread]).tolist() if unread else []
        for (at, _, lr), value in zip(unread, values, strict=True):
            if not math.isfinite(value):
                previous = latest_checkpoint(output_dir)
                kept = f"the last good checkpoint is {previous}" if previous else "no checkpoint was written yet"
                raise UserError(f"loss became {value} at step {at}; {kept}. Lower --lr or use "
                                "--mixed-precision no, then --resume or start again")
            history.append((at, value, lr))
        unread.clear()

    def training_state(step: int) -> dict:
        return {"optimizer": optimizer.state_dict(), "lr_schedule": lr_schedule.state_dict(), "step": step,
                "generator": generator.get_state(), "history": history, "validation": fixed_losses,
                "learned_checks": learned_checks, "ema": moving_average}

    metadata = {"base_model": config.model, "family": model_family(pipe), "method": method.name,
                "token": config.token, **method.metadata(), "property": config.property, "seed": str(config.seed),
                "lr": str(config.learning_rate()), "resolution": str(resolution), "tool_version": __version__}
    main = accelerator.is_main_process  # only the main process writes files
    if main:
        write_run_file(output_dir, config, "running", {"metadata": metadata})
    # The loss on one fixed batch (same latents, noise and timesteps every time; its own generator, so the
    # training draws are untouched) falls as the concept is learned, where the training loss only jitters
    # with the random timesteps: `fixed_losses` keeps it every few steps for loss.png. DVAR-style early stop
    # measures it at every step and stops once its recent variance is a small fraction of the whole run's.
    fixed_batch = draw(torch.Generator().manual_seed(config.seed + 1), 0)
    fixed_every = 1 if config.early_stop_window else fixed_batch_every(config.steps)

    def fixed_batch_loss() -> float:
        # With --ema-decay, of the average: the curve follows what the run would save at that step.
        with parameters_set_to(method.trainable_parameters(), moving_average), torch.no_grad(), accelerator.autocast():
            model_alone = accelerator.unwrap_model(model)
            return averaged(batch_loss(model_alone, fixed_batch, config.prior_loss_weight)).item()

    if step == 0:
        fixed_losses.append((0, fixed_batch_loss()))  # where the curve starts
    check = None
    if config.stop_when_learned:
        check = learned_check(data.images, config.token, config.property, config.seed)
        logger.info("--stop-when-learned: every %d steps, stop once %.0f %% of %d images show %s, %d time(s) in a row",
                    config.learned_every, 100 * config.learned_share, len(check.prompts),
                    ", ".join(f"{k} {v}" for k, v in check.shared.items()), config.learned_passes)

    stopped_early = stop_requested = False
    first_step = step
    loop_started = time.monotonic()
    progress = tqdm(total=config.steps, initial=step, desc=f"training {config.token}", unit="step",
                    disable=not accelerator.is_local_main_process)
    try:
        while step < config.steps:
            if stop is not None and stop.is_set():
                stop_requested = True
                break
            method.step_started(step)
            loss = torch.zeros((), device=accelerator.device)
            for micro_batch in range(config.grad_accum):
                # Processes exchange gradients once per optimizer step, after its last micro-batch.
                last = micro_batch == config.grad_accum - 1
                with contextlib.nullcontext() if last else accelerator.no_sync(model), accelerator.autocast():
                    batch = draw(generator, step)
                    micro_loss = batch_loss(model, batch, config.prior_loss_weight)
                    extra = method.regularisation(batch.prompts[:batch.subject_count])
                    if extra is not None:
                        micro_loss = micro_loss + extra
                accelerator.backward(micro_loss / config.grad_accum)
                loss += micro_loss.detach().float() / config.grad_accum
            optimizer.step()
            lr_schedule.step()
            optimizer.zero_grad(set_to_none=True)
            method.step_finished(step)
            if moving_average is not None:
                update_average(moving_average, method.trainable_parameters(), config.ema_decay, step)
            step += 1
            unread.append((step, averaged(loss), lr_schedule.get_last_lr()[0]))
            checkpoint_now = config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps
            check_now = check is not None and step % config.learned_every == 0 and step < config.steps
            preview_now = main and config.validation_prompt and step % config.validation_every == 0
            # Checkpoints, checks and previews wait for the device anyway; reading first also keeps them from
            # saving or drawing vectors that a non-finite loss has spoiled. The first step's read puts a loss on
            # the progress bar at once.
            if (on_step is not None or checkpoint_now or check_now or preview_now or step % LOSS_READ_EVERY == 0
                    or step == first_step + 1):
                read_losses()
            if on_step is not None:
                on_step(step, history[-1][1])
            progress.update(1)
            if step % fixed_every == 0 or step == config.steps:
                fixed_losses.append((step, fixed_batch_loss()))
            if config.early_stop_window and variance_has_settled([value for at, value in fixed_losses if at > 0],
                                                                 config.early_stop_window, config.early_stop_threshold):
                logger.info("early stop at step %d: the fixed-batch loss has settled", step)
                stopped_early = True
                break
            if check_now:
                with parameters_set_to(method.trainable_parameters(), moving_average), accelerator.autocast():
                    share = on_main_process(accelerator, learned_share, pipe, check)
                learned_checks.append((step, share))
                if should_stop([s for _, s in learned_checks], config.learned_share, config.learned_passes):
                    logger.info("stopped at step %d: in the last %d check(s), at least %.0f %% of the images showed "
                                "what the pictures share", step, config.learned_passes, 100 * config.learned_share)
                    stopped_early = True
                    break
            if history:
                progress.set_postfix(loss=f"{sum(r[1] for r in history[-20:]) / len(history[-20:]):.4f}",
                                     **({"learned": f"{learned_checks[-1][1]:.2f}"} if learned_checks else {}))
            if preview_now:
                with parameters_set_to(method.trainable_parameters(), moving_average), accelerator.autocast():
                    render_previews(pipe, config, output_dir / PREVIEW_DIR / f"step-{step:06d}.png", resolution)
            if main and checkpoint_now:
                save_checkpoint(output_dir, step, method.state_dict(), training_state(step), config.keep_checkpoints)
    except KeyboardInterrupt:
        progress.close()
        if not main:
            raise
        read_losses()
        path = save_resumable_state(output_dir, config, method, step, training_state(step), history, "interrupted")
        raise UserError(f"interrupted at step {step}; saved {path}; continue with the same command and --resume") from None
    progress.close()
    read_losses()
    loop_ended = time.monotonic()

    def phases() -> dict[str, float]:
        return {"loading": loading_seconds, "preparing": loop_started - started, "steps": loop_ended - loop_started,
                "writing": time.monotonic() - loop_ended}

    metadata.update(steps=str(step), stopped_early=str(stopped_early), created=datetime.now(UTC).isoformat(timespec="seconds"))
    final_loss = sum(r[1] for r in history[-20:]) / max(1, len(history[-20:]))
    if stop_requested:  # as after Ctrl-C, but a normal return: the caller asked for it
        if main:
            save_resumable_state(output_dir, config, method, step, training_state(step), history, "stopped")
        accelerator.wait_for_everyone()
        return TrainResult(output_dir, {}, step, final_loss, time.monotonic() - started, history, stopped=True,
                           phases=phases())
    if moving_average is not None:  # the run's result is the average: saved, previewed, left in the caller's pipeline
        set_values(method.trainable_parameters(), moving_average)
    outputs = {}
    if main:
        outputs = method.save(output_dir, metadata)
        save_checkpoint(output_dir, step, method.state_dict(), training_state(step), config.keep_checkpoints)
        write_loss_files(output_dir, history, fixed_losses)
        if config.validation_prompt and step % config.validation_every:
            with accelerator.autocast():
                render_previews(pipe, config, output_dir / PREVIEW_DIR / f"step-{step:06d}.png", resolution)
        write_run_file(output_dir, config, "finished", {
            "metadata": metadata, "final_loss": final_loss, **({"learned_checks": learned_checks} if check else {}),
            "seconds": {name: round(value, 3) for name, value in phases().items()},
            "outputs": {kind: path.relative_to(output_dir).as_posix() for kind, path in outputs.items()},
            **({} if method.adds_token else {"trigger_word": config.token})})
    accelerator.wait_for_everyone()
    timings = phases()
    if main:
        logger.info("%s", phase_summary(timings, step - first_step))
    return TrainResult(output_dir, outputs, step, final_loss, time.monotonic() - started, history, stopped_early,
                       phases=timings)


def phase_summary(phases: dict[str, float], steps: int) -> str:
    """One line of where a run's time went, e.g. 'loading 0.2 s, preparing 0.3 s, 800 steps 96.3 s (120 ms a
    step), writing 0.5 s'. The imports before train() are not in it (about 4.5 s of a miniworld launch on 2 cores)."""
    per_step = f" ({1000 * phases['steps'] / steps:.0f} ms a step)" if steps else ""
    return (f"loading {phases['loading']:.1f} s, preparing {phases['preparing']:.1f} s, {steps} steps "
            f"{phases['steps']:.1f} s{per_step}, writing {phases['writing']:.1f} s")


def save_resumable_state(output_dir: Path, config: TrainConfig, method: Method, step: int, state: dict,
                         history: list, status: str) -> Path:
    """A run ended before its last step (Ctrl-C or `stop`): checkpoint, loss files, run.json with `status`."""
    path = save_checkpoint(output_dir, step, method.state_dict(), state, config.keep_checkpoints)
    write_loss_files(output_dir, history, state["validation"])
    write_run_file(output_dir, config, status, {"step": step})
    return path


def update_average(average: list[torch.Tensor], parameters: list[torch.Tensor], decay: float, step: int) -> None:
    """Move `average` towards `parameters` after optimizer step `step` (0-based). The decay starts low and
    rises to `decay` ((1 + step) / (10 + step), as diffusers' EMAModel), so the first steps are not held
    back by the starting point."""
    rate = 1 - min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for mean, parameter in zip(average, parameters, strict=True):
            mean.lerp_(parameter.detach(), rate)


@contextlib.contextmanager
def parameters_set_to(parameters: list[torch.Tensor], values: list[torch.Tensor] | None):
    """Inside the block `parameters` hold `values` (None: they keep their own); their own come back after."""
    if values is None:
        yield
        return
    own = [parameter.detach().clone() for parameter in parameters]
    set_values(parameters, values)
    try:
        yield
    finally:
        set_values(parameters, own)


def set_values(parameters: list[torch.Tensor], values: list[torch.Tensor]) -> None:
    """Copy `values` into `parameters`, in place (the optimizer and the text encoders keep the same tensors)."""
    with torch.no_grad():
        for parameter, value in zip(parameters, values, strict=True):
            parameter.copy_(value)


def on_main_process(accelerator: Accelerator, function: Callable, *args):
    """`function(*args)`, computed by the main process alone and sent to the others, which wait for it."""
    value = [function(*args) if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        broadcast_object_list(value)
    return value[0]


def fixed_batch_every(steps: int) -> int:
    """How often the fixed-batch loss is measured without early stop: about 50 points on a run's curve, but
    not more often than every 10 steps. Each is a forward pass, about half a step on miniworld: ~3 % of a run."""
    return max(10, steps // 50)


def variance_has_settled(losses: list[float], window: int, threshold: float) -> bool:
    """DVAR's criterion: var(last `window` losses) < threshold x var(all losses), once 2 windows are in."""
    if len(losses) < 2 * window:
        return False
    recent = torch.tensor(losses[-window:], dtype=torch.float64)
    return bool(recent.var() < threshold * torch.tensor(losses, dtype=torch.float64).var())


def optimizer_options(config: TrainConfig) -> dict:
    """AdamW's settings from --adam-beta1, --adam-beta2, --adam-epsilon and --weight-decay."""
    return {"betas": (config.adam_beta1, config.adam_beta2), "eps": config.adam_epsilon,
            "weight_decay": config.weight_decay}


def make_optimizer(config: TrainConfig) -> Callable[..., torch.optim.Optimizer]:
    """AdamW (`adamw`), or bitsandbytes' 8-bit AdamW with --use-8bit-adam."""
    if not config.use_8bit_adam:
        return adamw
    try:
        import bitsandbytes
    except ImportError:
        raise UserError("--use-8bit-adam needs bitsandbytes: pip install bitsandbytes (CUDA GPUs)") from None
    return bitsandbytes.optim.AdamW8bit


# Reading a loss makes the host wait until the device has finished the step, so a GPU's queue runs dry before
# the next step's kernels are sent; the loop reads them this many steps at a time, and whenever it waits anyway
# (a checkpoint, a check, previews; every step when `train` is given `on_step`, which reports each loss). On the
# CPU a read costs nothing.
LOSS_READ_EVERY = 10

# PyTorch (>= 2.4, the version pyproject.toml asks for) has AdamW's fused kernel on these devices.
FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def adamw(parameter_groups: list[dict], **options) -> torch.optim.AdamW:
    """AdamW over `parameter_groups`, with PyTorch's fused kernel where every parameter is on a device that has
    it: one pass over each tensor per step instead of one per arithmetic operation. On miniworld's CPU runs
    the optimizer step took 0.18-0.60x the default's time, which made DreamBooth's whole-UNet step 0.94x; for
    the other methods it is a few ms of a ~100 ms step (benchmarks/results/optimizer_speed.md). Its rounding
    differs from the default's in the last bits (1e-6 after 60 steps), so the vectors of a run differ too."""
    devices = {parameter.device.type for group in parameter_groups for parameter in group["params"]}
    fused = devices <= set(FUSED_ADAMW_DEVICES)
    return torch.optim.AdamW(parameter_groups, fused=fused or None, **options)


def speed_options(pipe, config: TrainConfig) -> None:
    """Gradient checkpointing, channels-last and torch.compile, each only when asked for."""
    network = denoiser(pipe)
    if config.gradient_checkpointing:
        network.enable_gradient_checkpointing()
        for _, _, encoder in text_encoders(pipe):
            encoder.gradient_checkpointing_enable()
    if config.channels_last and not is_transformer_family(pipe):  # a transformer's latents are token sequences
        network.to(memory_format=torch.channels_last)
    if config.compile:
        network.compile()  # in place: parameter names (and so checkpoints) stay the same


def move_to_device(pipe, device: torch.device, weight_dtype: torch.dtype, vae_dtype: torch.dtype = torch.float32):
    """The pipeline's models onto `device`, cast to `weight_dtype` on the way: moved in fp32 and cast there, they
    would first hold twice the memory (SDXL's 3.5 billion weights: 13 GB). The VAE in `vae_dtype`: fp32 while it
    encodes the pictures (fp16 overflows in SDXL's), then `run_training` casts it with the rest. A quantised model
    moves as it is (diffusers refuses to cast one). With `weight_dtype` fp32 nothing is cast."""
    for module in pipe.components.values():
        if not isinstance(module, torch.nn.Module):
            continue
        if weight_dtype == torch.float32 or getattr(module, "is_quantized", False):
            module.to(device)
        else:
            module.to(device, vae_dtype if module is pipe.vae else weight_dtype)


def encode_pictures(pipe, data: TrainingData, config: TrainConfig, resolution: int,
                    device: torch.device) -> list[LatentCache]:
    """The pictures through the VAE once, each at its bucket's size (or the square with --no-bucket)."""
    sizes = picture_sizes(data.images, resolution, size_step(pipe), config.bucket)
    return encode_images(pipe.vae, data.images, sizes, config.crop, config.crop_variants, config.flip, config.seed,
                         device, torch.float32, data.masks, config.refine_latents)


def report_settings(config: TrainConfig, method: Method) -> None:
    """One line on the run's main settings: on miniworld, those left out are the method's measured ones, so a run
    says what it took."""
    parts = [f"{config.steps} steps", f"lr {config.learning_rate():g}", f"batch {config.batch_size}"]
    if config.lr_scheduler != "constant":
        parts.append(f"{config.lr_scheduler} schedule")
    if getattr(method, "num_vectors", None):
        parts.append(f"{method.num_vectors} vector(s)")
    if getattr(config.options, "rank", None):
        parts.append(f"LoRA rank {config.options.rank} ({config.options.lora_layers} layers)")
    if config.ema_decay:
        parts.append(f"moving average {config.ema_decay:g}")
    measured = " (miniworld's defaults for the options left out)" if config.model == "miniworld" and \
        method.miniworld_defaults else ""
    logger.info("%s: %s%s", config.method, ", ".join(parts), measured)


def report_shapes(data: TrainingData) -> None:
    """One line on the sizes the pictures train at, and how many have a mask."""
    shapes = ", ".join(f"{cache.target_size[1]}x{cache.target_size[0]} ({len(set(cache.image_index))})"
                       for cache in data.caches)
    masked = sum(mask is not None for mask in data.masks)
    logger.info("training at %s%s", shapes, f"; {masked} of {len(data.masks)} pictures masked" if masked else "")


@torch.no_grad()
def class_latents(pipe, config: TrainConfig, folder: Path, accelerator: Accelerator,
                  sizes: list[tuple[int, int]]) -> list[LatentCache]:
    """The class images (made once by the main process, kept in `folder`), encoded at each of `sizes`
    ((width, height), the subject's buckets in order), so that a batch's two halves have one shape."""
    if accelerator.is_main_process:
        with accelerator.autocast():  # the VAE is still in fp32 beside the cast models (move_to_device)
            ensure_class_images(pipe, config, folder)
    accelerator.wait_for_everyone()
    class_images = ensure_class_images(pipe, config, folder)  # reads what is there
    return [encode_images(pipe.vae, class_images, [size] * len(class_images), "center", 1, False, config.seed,
                          accelerator.device, torch.float32)[0] for size in sizes]


@torch.no_grad()
def ensure_class_images(pipe, config: TrainConfig, folder: Path) -> list:
    """`num_class_images` pictures of `class_prompt` by the frozen model, made once and kept in `folder`."""
    from PIL import Image

    from .generation import save_png

    folder.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(config.num_class_images) if not (folder / f"{i:04d}.png").is_file()]
    for index in tqdm(missing, desc="class images", unit="image", disable=not missing):
        image = pipe(config.class_prompt, num_inference_steps=config.validation_steps,
                     guidance_scale=guidance_scale(pipe, config.validation_guidance),
                     generator=torch.Generator().manual_seed(config.seed + index)).images[0]
        save_png(image, folder / f"{index:04d}.png", f"{config.class_prompt}\nSeed: {config.seed + index}")
    return [Image.open(folder / f"{i:04d}.png").convert("RGB") for i in range(config.num_class_images)]


@torch.no_grad()
def render_previews(pipe, config: TrainConfig, path: Path, resolution: int) -> None:
    """Sample preview images with the current embedding (`preview_images`) and save them as one grid. Under mixed
    precision the caller runs it in autocast: the learning rows are fp32, which makes the pipeline take fp32
    latents into a denoiser of the weight dtype."""
    save_grid(preview_images(pipe, config, resolution), path)


def preview_images(pipe, config: TrainConfig, resolution: int) -> list:
    """`config.num_validation_images` images of the validation prompt, seeded by `config.seed`, with the preview
    options: at the pipeline's own size for the UNet families, at the training `resolution` for the transformer ones
    (whose default, 1024 px, would make a preview cost more than many steps)."""
    generator = torch.Generator().manual_seed(config.seed)
    size = {"height": resolution, "width": resolution} if is_transformer_family(pipe) else {}
    with using_sampler(pipe, config.validation_sampler):
        return pipe(**prompt_arguments(pipe, config.validation_prompt), **size,
                    num_inference_steps=config.validation_steps,
                    guidance_scale=guidance_scale(pipe, config.validation_guidance),
                    num_images_per_prompt=config.num_validation_images, generator=generator).images
