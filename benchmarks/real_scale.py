"""Our Textual Inversion step against the step of diffusers' example scripts, on real-size models.

Models: SD 1.5, SD 2.1, SDXL base 1.0 and Flux.1-dev built with random weights from their published diffusers
configs (benchmarks/real_scale_configs/, nothing is downloaded), with a local CLIP-sized tokenizer: the real
vocabulary size (49408) and special ids, so the text encoders' embedding matrices have their real size (Flux's T5
gets a small local tokenizer; its 32128-row matrix is built at full size). Flux.1-dev whole takes 67 GB in fp32:
`--depth N` builds it with N of its 19 double-stream blocks, 2N of its 38 single-stream ones and N of T5-XXL's 24
layers, each at full width, and the results estimate the whole model's step from each stack's share. `tiny-sd1`,
`tiny-sdxl` and `tiny-flux` are this repo's tiny pipelines (at their native size), for a run in seconds.

Ours: the code of a step of `training.run_training`, put together here from the same functions (cached
latents from `data.encode_images`, `draw_batch`, the `TextualInversion` method's rows in AdamW, the loss of
`objective.DenoisingLoss` / `batch_loss`, backward, optimizer step, zero_grad, the method's step hook). Timing
the whole `train()` at two lengths and differencing (benchmarks/step_overhead.py) would also count accelerate's
wrapper, but would write and load each multi-gigabyte pipeline twice a round; the step's own code is the same.
Theirs: benchmarks/diffusers_example_step.py, a re-implementation of the example script's step (SD 1.x/2.x,
SDXL), and benchmarks/diffusers_flux_example_step.py, of the advanced Flux script's step as textual inversion (Flux;
CLIP-L learns the token in both, as that script trains it without --enable_t5_ti).

Time: both steps on one pipeline in one process, in alternating rounds after warm-up; median seconds per step.
Breakdown: the same steps split at the text encoders' and UNet's forward hooks and around backward and the
optimizer (on CUDA, separate steps after the rounds, since each split waits for the GPU).
Memory: a fresh process per (model, step kind) builds the model in the CPU's memory (where loading one puts
it), sets the step up (which moves it to the device) and runs a few steps: its peak RSS on the CPU (VmHWM),
`torch.cuda.max_memory_allocated` on CUDA. The timing process builds the model on the device it runs on.

    python -m benchmarks.real_scale [--models sd15 sd21 sdxl flux-dev] [--depth 1] [--resolution 256] [--batch-size 1] [--rounds 5]
        [--threads 2] [--device cpu] [--precision fp32] [--token-gradient all|up|finest] [--output PATH]
    python -m benchmarks.real_scale --count-only   # parameter counts of the configs, built on the meta device
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from textual_inversion.methods.textual_inversion import TOKEN_GRADIENT_CHOICES

from .common import (
    RESULTS_DIR,
    ROOT,
    argument_parser,
    command,
    device_suffix,
    in_fresh_process,
    machine,
    print_and_write,
)

CONFIGS_DIR = ROOT / "benchmarks" / "real_scale_configs"
REAL_MODELS = ("sd15", "sd21", "sdxl", "flux-dev")
TINY_MODELS = {"tiny-sd1": "sd1", "tiny-sdxl": "sdxl", "tiny-flux": "flux"}
FLOW_MODELS = ("flux-dev", "tiny-flux")  # the transformer families: their step is the advanced Flux script's
CLIP_VOCAB_SIZE = 49408  # CLIP's BPE vocabulary, <|startoftext|> and <|endoftext|> last
TOKEN, INIT_TOKEN = "<bench>", "cat"
LR = 5e-3  # the same for both steps; it changes no timing
PICTURES = 4  # training pictures, drawn from in both steps
MIXED_PRECISION = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}  # --precision -> TrainConfig.mixed_precision
PHASES = ("VAE encode", "text encoder", "T5 encoder", "UNet forward", "backward", "optimizer", "rest")
# Known sizes in millions, the check that the configs are the real ones (SD 1.5 model card: 860M UNet, 123M
# text encoder; SDXL paper: 2.6B UNet, 817M = 123M + 694M text encoders; SD 2.x: 865M UNet and 340M, the
# OpenCLIP ViT-H text tower less its last layer, as usually counted; the KL VAE 84M; Flux.1-dev: Black Forest
# Labs' "12 billion parameter" transformer, 23.8 GB in bf16 (benchmarks/results/quantized_memory.md), T5 v1.1 XXL's
# encoder 4.76B by its published shape: 24 layers of width 4096 with 64 heads of 64 and a gated feed-forward of 10240,
# and 32128 token rows).
EXPECTED_MILLIONS = {"sd15": {"unet": 860, "text_encoder": 123, "vae": 84},
                     "sd21": {"unet": 866, "text_encoder": 340, "vae": 84},
                     "sdxl": {"unet": 2567, "text_encoder": 123, "text_encoder_2": 695, "vae": 84},
                     "flux-dev": {"transformer": 11901, "text_encoder": 123, "text_encoder_2": 4762, "vae": 84}}
# Flux.1-dev's stacks, for --depth: the transformer's double- and single-stream blocks, T5-XXL's encoder layers.
FLUX_DEPTH = {"num_layers": 19, "num_single_layers": 38, "t5_layers": 24}


def clip_sized_tokenizer(folder: Path, pad_token: str = "<|endoftext|>"):
    """A CLIP tokenizer as long as the real one (49408 ids, specials at 49406/49407), its merges only for
    `tiny.WORDS`: every id it gives has a row in a real-size embedding matrix, and a new token gets id 49408."""
    from transformers import CLIPTokenizer

    from textual_inversion.tiny import write_tokenizer

    write_tokenizer(folder)
    specials = ["<|startoftext|>", "<|endoftext|>"]
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    ordinary = [token for token in sorted(vocab, key=vocab.get) if token not in specials]
    unused = [f"<|unused-{i}|>" for i in range(CLIP_VOCAB_SIZE - len(specials) - len(ordinary))]
    tokens = ordinary + unused + specials
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}), encoding="utf-8")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77,
                         pad_token=pad_token)


def text_encoder_from(config: dict):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    values = {key: value for key, value in config.items() if key != "architectures"}
    with_projection = config["architectures"] == ["CLIPTextModelWithProjection"]
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(CLIPTextConfig(**values))


def build_pipeline(name: str, workdir: Path, meta: bool = False, device: str = "cpu", depth: int = 0):
    """The pipeline `name` with random weights (seeded): a real-size one from its configs, or a tiny one.
    A real-size one's weights are made on `device` (random initialisation of billions of weights takes tens of
    seconds on the CPU, a fraction of one on a GPU); with `meta` they are not made at all (for counting them).
    `depth` (Flux only; 0: all) keeps that many of the transformer's double-stream blocks, twice as many
    single-stream ones and that many of T5's layers, each at its full width."""
    import diffusers
    from diffusers import (
        AutoencoderKL,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    from textual_inversion.models import load_pipeline
    from textual_inversion.tiny import build_tiny_pipeline

    if name in TINY_MODELS:  # loaded back from its folder: the built one shares one tokenizer between two slots
        build_tiny_pipeline(TINY_MODELS[name], workdir / name)
        return load_pipeline(str(workdir / name))
    configs = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in (CONFIGS_DIR / name).glob("*.json")}
    if name in FLOW_MODELS:
        return build_flux(configs, workdir / f"{name}-tokenizer", meta, device, depth)
    parts = {"scheduler": getattr(diffusers, configs["scheduler"]["_class_name"]).from_config(configs["scheduler"]),
             "tokenizer": clip_sized_tokenizer(workdir / f"{name}-tokenizer")}
    torch.manual_seed(0)
    with torch.device("meta" if meta else device):
        parts.update(unet=UNet2DConditionModel.from_config(configs["unet"]),
                     vae=AutoencoderKL.from_config(configs["vae"]), text_encoder=text_encoder_from(configs["text_encoder"]))
        if "text_encoder_2" in configs:
            parts["text_encoder_2"] = text_encoder_from(configs["text_encoder_2"])
    if "text_encoder_2" in configs:
        # SDXL's second tokenizer pads with "!" (id 0), not <|endoftext|>
        return StableDiffusionXLPipeline(**parts, tokenizer_2=clip_sized_tokenizer(workdir / f"{name}-tokenizer-2", "!"))
    return StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def build_flux(configs: dict, tokenizer_folder: Path, meta: bool, device: str, depth: int):
    """Flux.1-dev from its configs (see `build_pipeline`), with a CLIP-sized tokenizer and a local T5 tokenizer
    (its ids all within T5's 32128 rows)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from textual_inversion.tiny import t5_tokenizer

    transformer, t5 = dict(configs["transformer"]), dict(configs["text_encoder_2"])
    if depth:
        transformer.update(num_layers=depth, num_single_layers=2 * depth)
        t5.update(num_layers=depth, num_decoder_layers=depth)
    torch.manual_seed(0)
    with torch.device("meta" if meta else device):
        parts = {"transformer": FluxTransformer2DModel.from_config(transformer),
                 "vae": AutoencoderKL.from_config(configs["vae"]),
                 "text_encoder": text_encoder_from(configs["text_encoder"]),
                 "text_encoder_2": T5EncoderModel(T5Config(**{k: v for k, v in t5.items() if k != "architectures"}))}
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler.from_config(configs["scheduler"]),
                        tokenizer=clip_sized_tokenizer(tokenizer_folder), tokenizer_2=t5_tokenizer(), **parts)


def component_sizes(pipe) -> dict[str, int]:
    """Parameters per model component of the pipeline."""
    names = ("unet", "transformer", "vae", "text_encoder", "text_encoder_2")
    return {name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in names
            if getattr(pipe, name, None) is not None}


def write_pictures(folder: Path, size: int, count: int = PICTURES, caption: str | None = None) -> Path:
    """`count` square test pictures (a disc on a coloured ground with noise) of `size` pixels; with `caption`, each
    with that caption file (a `{token}` placeholder in it)."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        noise = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
        image = Image.fromarray(noise + np.array([180, 50 * index, 40], dtype=np.uint8))
        ImageDraw.Draw(image).ellipse((size // 8, size // 8, size * 5 // 8, size * 5 // 8), fill=(30, 60, 220))
        image.save(folder / f"{index}.png")
        if caption is not None:
            (folder / f"{index}.txt").write_text(caption, encoding="utf-8")
    return folder


class PhaseClock:
    """Splits a step's wall time into phases: each `mark(phase)` closes the phase that ran since the last mark.

    On CUDA every reading waits for the queued kernels, so that a phase holds its own GPU time; the headline
    timing there runs with `split` off (marks do nothing; only the step's start and end wait).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.split = True
        self.phases: dict[str, float] = {}
        self.begun = self.last = 0.0

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def start(self) -> None:
        self.phases = {}
        self.begun = self.last = self.now()

    def mark(self, phase: str) -> None:
        if not self.split:
            return
        now = self.now()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self.last
        self.last = now

    def stop(self) -> float:
        """Seconds since `start`."""
        return self.now() - self.begun

    def watch(self, module, phase: str) -> None:
        """Time `module`'s forward passes as `phase` (what ran before them closes as "rest")."""
        module.register_forward_pre_hook(lambda *_: self.mark("rest"))
        module.register_forward_hook(lambda *_: self.mark(phase))


class NoClock:
    """A clock that times nothing (the memory measurements)."""

    def mark(self, phase: str) -> None:
        pass


class OurStep:
    """Our step: the body of `training.run_training`'s loop, on latents cached once by `data.encode_images`."""

    name = "ours"

    def __init__(self, pipe, images: Path, resolution: int, batch_size: int, device: torch.device, precision: str,
                 token_gradient: str = "all", frozen_text: str = "once"):
        from diffusers.optimization import get_scheduler

        from textual_inversion.config import TrainConfig
        from textual_inversion.data import read_training_data
        from textual_inversion.methods.textual_inversion import TextualInversion
        from textual_inversion.models import denoiser, is_transformer_family, text_encoders
        from textual_inversion.objective import DenoisingLoss, training_scheduler
        from textual_inversion.training import (
            WEIGHT_DTYPES,
            adamw,
            encode_pictures,
            move_to_device,
            optimizer_options,
        )

        options = {"init_token": INIT_TOKEN, "token_gradient": token_gradient}
        if is_transformer_family(pipe):  # CLIP-L learns, T5 does not: their script without --enable_t5_ti
            options["ti_encoders"] = "clip_l"
        config = TrainConfig(model="benchmark", images=str(images), token=TOKEN, options=options,
                             batch_size=batch_size, lr=LR, mixed_precision=MIXED_PRECISION[precision],
                             device=str(device))
        self.config, self.pipe, self.device = config, pipe, device
        # As `train()` sets the pipeline up, then `run_training`.
        self.weight_dtype = WEIGHT_DTYPES[config.mixed_precision]
        for module in [encoder for _, _, encoder in text_encoders(pipe)] + [denoiser(pipe), pipe.vae]:
            module.requires_grad_(False).eval()
        move_to_device(pipe, device, self.weight_dtype)
        self.data = read_training_data(images, config.token, config.property)
        self.data.caches = encode_pictures(pipe, self.data, config, resolution, device)
        self.method = TextualInversion(config)
        self.method.prepare(pipe, self.data)
        move_to_device(pipe, device, self.weight_dtype, vae_dtype=self.weight_dtype)
        for parameter in self.method.trainable_parameters():
            parameter.data = parameter.data.float()
        self.noise_scheduler = training_scheduler(pipe)
        self.denoiser = denoiser(pipe)
        self.optimizer = adamw(self.method.parameter_groups(config.learning_rate()), **optimizer_options(config))
        self.lr_schedule = get_scheduler(config.lr_scheduler, self.optimizer, num_warmup_steps=config.lr_warmup_steps,
                                         num_training_steps=config.steps)
        self.model = DenoisingLoss(pipe, self.noise_scheduler, config.mask_weight)
        if frozen_text == "every-step":  # as before the loss kept a frozen encoder's output per prompt
            self.model.frozen_outputs = None
        self.wrappers = [(encoder, encoder.get_input_embeddings()) for _, _, encoder in text_encoders(pipe)]
        self.phases = [(encoder, "T5 encoder" if key == "t5" else "text encoder") for key, _, encoder in text_encoders(pipe)]
        self.shift_factor = getattr(pipe.vae.config, "shift_factor", None) or 0.0
        self.generator = torch.Generator().manual_seed(config.seed)
        # accelerate's gradient scaling under fp16, which `accelerator.backward` and its optimizer wrapper do
        self.scaler = torch.amp.GradScaler(device.type) if self.weight_dtype == torch.float16 else None
        self.step_index = 0

    def activate(self) -> None:
        """Put our embedding wrappers back into the encoders (their step may share them), frozen, in eval mode, and
        with --token-gradient our hooks back on the UNet (their step takes them off)."""
        from textual_inversion.methods.textual_inversion import stop_token_gradient

        token_gradient = self.config.options.token_gradient
        if token_gradient != "all" and not self.method.gradient_stops:
            self.method.gradient_stops = stop_token_gradient(self.pipe.unet, token_gradient)
        self.denoiser.eval()
        for encoder, wrapper in self.wrappers:
            encoder.set_input_embeddings(wrapper)
            encoder.eval()
            if hasattr(encoder, "text_projection"):
                encoder.text_projection.requires_grad_(False)

    def deactivate(self) -> None:
        """Take our --token-gradient hooks off the UNet, which their step shares."""
        self.method.learn_through_every_layer()

    def modules(self) -> list:
        """The modules whose forward passes the phase clock times: (module, phase); T5 has a phase of its own."""
        return self.phases + [(self.denoiser, "UNet forward")]


    def step(self, clock) -> float:
        """One optimizer step, as `run_training` takes it (one micro-batch); returns the loss."""
        from textual_inversion.data import draw_batch
        from textual_inversion.objective import batch_loss

        from .diffusers_example_step import autocast, optimizer_step

        self.method.step_started(self.step_index)
        batch = draw_batch(self.data, self.config.batch_size, self.config.class_prompt, self.generator,
                           self.noise_scheduler.config.num_train_timesteps, self.pipe.vae.config.scaling_factor, 0, 1,
                           self.shift_factor)
        with autocast(self.device, self.weight_dtype):  # accelerator.autocast()
            loss = batch_loss(self.model, batch, self.config.prior_loss_weight)
        clock.mark("rest")
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        clock.mark("backward")
        value = loss.item()
        clock.mark("rest")
        optimizer_step(self.optimizer, self.scaler)
        self.lr_schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        clock.mark("optimizer")
        self.method.step_finished(self.step_index)
        self.step_index += 1
        clock.mark("rest")
        return value


def set_up(job: dict, kinds: tuple[str, ...]):
    """The job's pipeline and the asked step kinds on it (in this process)."""
    import diffusers
    import transformers
    from PIL import Image

    from textual_inversion.models import denoiser

    from .diffusers_example_step import DiffusersExampleStep
    from .diffusers_flux_example_step import DiffusersFluxExampleStep

    for library in (diffusers, transformers):  # their load bars and cast notes would bury the results
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()
    torch.set_num_threads(job["threads"])
    torch.manual_seed(job["seed"])
    random.seed(job["seed"])
    device = torch.device(job["device"])
    pipe = build_pipeline(job["model"], Path(job["workdir"]), device=job.get("build_on", job["device"]),
                          depth=job.get("depth", 0))
    # Both start from a frozen model in eval mode (`train()` freezes it; `from_pretrained` gives eval mode and
    # their script freezes all but the embedding matrix, which is a module of its own here).
    for module in [denoiser(pipe), pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)]:
        if module is not None:
            module.requires_grad_(False).eval()
    steps = []
    if "ours" in kinds:
        steps.append(OurStep(pipe, Path(job["images"]), job["resolution"], job["batch_size"], device, job["precision"],
                             job.get("token_gradient", "all"), job.get("frozen_text", "once")))
    if "theirs" in kinds:
        from textual_inversion.training import WEIGHT_DTYPES

        pictures = [Image.open(path).convert("RGB") for path in sorted(Path(job["images"]).glob("*.png"))]
        their_step = DiffusersFluxExampleStep if job["model"] in FLOW_MODELS else DiffusersExampleStep
        steps.append(their_step(pipe, TOKEN, INIT_TOKEN, pictures, job["resolution"], job["batch_size"],
                                          device, WEIGHT_DTYPES[MIXED_PRECISION[job["precision"]]], LR,
                                          shares_pipe="ours" in kinds))
    return pipe, steps, device


def time_steps(job: dict) -> dict:
    """In a fresh process: both steps on one pipeline, alternating rounds; step seconds and phase splits."""
    pipe, steps, device = set_up(job, ("ours", "theirs"))
    clock = PhaseClock(device)
    watched = {}
    for step in steps:
        for module, phase in step.modules():
            watched[id(module)] = (module, phase)
    for module, phase in watched.values():
        clock.watch(module, phase)
    clock.split = device.type == "cpu"  # free there; on CUDA the split steps come after the rounds

    def timed(step) -> tuple[float, dict]:
        clock.start()
        step.step(clock)
        return clock.stop(), dict(clock.phases)

    def activate(step) -> None:
        for other in steps:
            if other is not step and hasattr(other, "deactivate"):
                other.deactivate()
        step.activate()

    for step in steps:
        activate(step)
        for _ in range(job["warmup"]):
            timed(step)
    rounds, splits = [], {step.name: [] for step in steps}
    for index in range(job["rounds"]):
        record = {}
        for step in steps if index % 2 == 0 else steps[::-1]:  # neither kind always goes first
            activate(step)
            results = [timed(step) for _ in range(job["steps_per_round"])]
            record[step.name] = [seconds for seconds, _ in results]
            if clock.split:
                splits[step.name] += [(seconds, phases) for seconds, phases in results]
        rounds.append(record)
    if not clock.split:
        clock.split = True
        for step in steps:
            activate(step)
            splits[step.name] = [timed(step) for _ in range(job["steps_per_round"])]
    return {"sizes": component_sizes(pipe), "rounds": rounds, "splits": splits}


def read_status(field: str) -> int | None:
    """A memory figure of this process from /proc/self/status, in bytes (None where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Restart the kernel's peak-RSS count of this process (Linux: "5" into clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_memory(job: dict, kind: str) -> dict:
    """In a fresh process: the model, one step kind set up and `memory_steps` steps; peak memory in bytes."""
    import resource

    _, (step,), device = set_up({**job, "build_on": "cpu"}, (kind,))  # as a model loads: into the CPU's memory
    step.activate()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        set_up_peak, before = torch.cuda.max_memory_allocated(device), torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        resettable = True
    else:
        set_up_peak = read_status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        before = read_status("VmRSS")
        resettable = reset_peak()
    for _ in range(job["memory_steps"]):
        step.step(NoClock())
    if cuda:
        torch.cuda.synchronize(device)
        in_steps = torch.cuda.max_memory_allocated(device)
    else:
        in_steps = read_status("VmHWM") if resettable else None
    return {"peak": max(set_up_peak, in_steps or 0), "in_steps": in_steps, "before_steps": before}


def native_resolution(name: str) -> int:
    """The model's own picture size: its UNet's sample size times the VAE's downscaling (Flux: its VAE's)."""
    if name in TINY_MODELS:
        return 32  # tiny.unet's 16 latents, tiny.vae's two blocks
    configs = CONFIGS_DIR / name
    if name in FLOW_MODELS:
        return json.loads((configs / "vae.json").read_text(encoding="utf-8"))["sample_size"]
    unet = json.loads((configs / "unet.json").read_text(encoding="utf-8"))
    vae = json.loads((configs / "vae.json").read_text(encoding="utf-8"))
    return unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1)


def count_only(models: list[str]) -> None:
    """Print each model's parameter counts, built on the meta device (no memory, no time)."""
    with tempfile.TemporaryDirectory() as workdir:
        for name in models:
            sizes = component_sizes(build_pipeline(name, Path(workdir), meta=True))
            print(f"{name}: " + ", ".join(f"{part} {count / 1e6:.2f}M{expectation(name, part, count)}"
                                          for part, count in sizes.items()))


def expectation(model: str, part: str, count: int) -> str:
    """" (expected ~N M: ok)", or "... MISMATCH", or "" where no size is known."""
    expected = EXPECTED_MILLIONS.get(model, {}).get(part)
    if expected is None:
        return ""
    verdict = "ok" if abs(count / 1e6 - expected) <= 0.01 * expected else "MISMATCH"
    return f" (expected ~{expected}M: {verdict})"


def label(row: dict) -> str:
    """The model's name in the tables, with its depth where reduced."""
    return f"{row['model']} (depth {row['depth']})" if row["depth"] else row["model"]


def mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f}"


def report(args, rows: list[dict], load: tuple[float, float]) -> list[str]:
    """The results file's lines."""
    precision = {"fp32": "fp32", "fp16": "fp16 weights, autocast", "bf16": "bf16 weights, autocast"}[args.precision]
    where = "peak RSS (VmHWM)" if args.device == "cpu" else "torch.cuda.max_memory_allocated"
    lines = [f"# Our Textual Inversion step against diffusers' example step "
             f"({machine(args.device, args.threads)}, {precision})", "",
             f"Produced by `{command()}`. Random weights (the real-size models from their published configs, "
             f"benchmarks/real_scale_configs/); batch {args.batch_size}, {PICTURES} pictures. Step: median "
             f"seconds over {args.rounds} rounds of {args.steps_per_round} steps of each kind, alternating in one "
             f"process after {args.warmup} warm-up steps each; the ratio is the median of the rounds' ours / theirs "
             f"(range in brackets). Memory (MiB): {where} of a fresh process per model and step kind that builds "
             f"the model in the CPU's memory, sets the step up (moving it to the device) and takes "
             f"{args.memory_steps} steps; 'in steps' is the peak from its first step on, 'before' what it held when "
             "the steps began. Goals: ours / theirs <= 0.5; ours' "
             "peak <= theirs'." + ("" if args.frozen_text == "once" else
                                   " Ours computes the frozen T5's output every step (--frozen-text every-step), as "
                                   "train did before it kept each prompt's.") + ("" if args.token_gradient == "all" else
                                   f" Ours with --token-gradient {args.token_gradient}: the token learns through "
                                   "those cross-attention layers only, so ours computes another gradient than "
                                   "theirs."), "",
             "| model | px | ours s | theirs s | ours / theirs | peak ours | peak theirs | in steps: ours / theirs "
             "| before: ours / theirs |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ours, theirs = row["memory"]["ours"], row["memory"]["theirs"]
        lines.append(f"| {label(row)} | {row['resolution']} | {row['ours']:.3f} | {row['theirs']:.3f} | "
                     f"{row['ratio']:.2f} ({row['range'][0]:.2f} to {row['range'][1]:.2f}) | {mib(ours['peak'])} | "
                     f"{mib(theirs['peak'])} | {mib(ours['in_steps'])} / {mib(theirs['in_steps'])} | "
                     f"{mib(ours['before_steps'])} / {mib(theirs['before_steps'])} |")
    met = {label(row): (row["ratio"] <= 0.5, row["memory"]["ours"]["peak"] <= row["memory"]["theirs"]["peak"])
           for row in rows}
    lines += ["", "Goals met: ours / theirs <= 0.5: " + ", ".join(f"{m} {'yes' if t else 'no'}" for m, (t, _) in met.items())
              + "; ours' peak <= theirs': " + ", ".join(f"{m} {'yes' if p else 'no'}" for m, (_, p) in met.items()) + "."]
    source = "the timed steps" if args.device == "cpu" else (
        f"{args.steps_per_round} more steps of each kind after the rounds, waiting for the GPU at every split")
    lines += ["", f"Seconds per phase of a step (medians over {source}; 'rest': data, noise, loss, hooks and "
              "bookkeeping; theirs' optimizer includes restoring the frozen rows; on Flux 'UNet forward' is the "
              "transformer's):", "",
              "| model | kind | step s | " + " | ".join(PHASES) + " |", "|---|---|---|" + "---|" * len(PHASES)]
    for row in rows:
        for kind in ("ours", "theirs"):
            phases = row["phases"][kind]
            lines.append(f"| {label(row)} | {kind} | {phases['step']:.3f} | "
                         + " | ".join(f"{phases[p]:.3f}" if p in phases else "-" for p in PHASES) + " |")
    for row in rows:
        if row["depth"]:
            lines += ["", *extrapolated(row)]
    parts = [part for part in ("unet", "transformer", "vae", "text_encoder", "text_encoder_2")
             if any(part in row["sizes"] for row in rows)]
    lines += ["", "Parameters of the built models (millions; the known size in brackets):", "",
              "| model | " + " | ".join(parts) + " |", "|---|" + "---|" * len(parts)]
    for row in rows:
        checked = "" if row["depth"] else row["model"]  # a reduced depth has no published size
        lines.append(f"| {label(row)} | " + " | ".join(
            f"{row['sizes'][p] / 1e6:.2f}{expectation(checked, p, row['sizes'][p])}" if p in row["sizes"] else "-"
            for p in parts) + " |")
    lines += ["", f"Load average (1 min) before: {load[0]:.1f}, after: {load[1]:.1f}, on {os.cpu_count()} cores."]
    return lines


def full_depth_step(phases: dict, depth: int) -> float:
    """A step of the whole Flux.1-dev from one measured at `depth`: the transformer's forward and the backward pass
    (which runs through it; CLIP-L's share is a few milliseconds) times 19 / depth, T5's time times 24 / depth."""
    transformer = phases.get("UNet forward", 0.0) + phases.get("backward", 0.0)
    t5 = phases.get("T5 encoder", 0.0)
    rest = phases["step"] - transformer - t5
    return rest + transformer * FLUX_DEPTH["num_layers"] / depth + t5 * FLUX_DEPTH["t5_layers"] / depth


def extrapolated(row: dict) -> list[str]:
    """The results lines of a reduced-depth Flux row's full-depth estimate."""
    depth, phases = row["depth"], row["phases"]
    ours, theirs = (full_depth_step(phases[kind], depth) for kind in ("ours", "theirs"))
    return [f"{row['model']} was built with {depth} of its 19 double-stream blocks, {2 * depth} of its 38 single-stream "
            f"blocks and {depth} of T5's 24 layers (each at full width; the whole model does not fit this machine's "
            "memory). Every block of a stack costs the same, so the whole model's step is estimated from the phases "
            f"above: the transformer's forward and the backward pass times {FLUX_DEPTH['num_layers'] / depth:g}, "
            f"T5's time times {FLUX_DEPTH['t5_layers'] / depth:g}, the rest as measured: ours {ours:.1f} s, theirs "
            f"{theirs:.1f} s, **ours / theirs {ours / theirs:.2f}** (an estimate, not a measurement). Peak memory is "
            "measured at the reduced depth only."]


def measure(name: str, args, workdir: Path) -> dict:
    """Timing and both memory measurements of one model, each in its own process."""
    resolution = native_resolution(name) if name in TINY_MODELS or not args.resolution else args.resolution
    from .diffusers_flux_example_step import INSTANCE_PROMPT

    # On Flux ours gets their one instance prompt as every picture's caption (on SD both draw from the templates).
    caption = INSTANCE_PROMPT.format("{token}") if name in FLOW_MODELS else None
    images = write_pictures(workdir / f"pictures-{resolution}-{name}", resolution, caption=caption)
    job = {"model": name, "workdir": str(workdir), "images": str(images), "resolution": resolution,
           "batch_size": args.batch_size, "device": args.device, "precision": args.precision, "threads": args.threads,
           "seed": 0, "warmup": args.warmup, "rounds": args.rounds, "steps_per_round": args.steps_per_round,
           "memory_steps": args.memory_steps, "token_gradient": args.token_gradient,
           "depth": args.depth if name == "flux-dev" else 0, "frozen_text": args.frozen_text}
    timing = in_fresh_process(time_steps, job)
    memory = {kind: in_fresh_process(peak_memory, job, kind) for kind in ("ours", "theirs")}
    medians = {kind: statistics.median(s for record in timing["rounds"] for s in record[kind])
               for kind in ("ours", "theirs")}
    ratios = [statistics.median(record["ours"]) / statistics.median(record["theirs"]) for record in timing["rounds"]]
    phases = {}
    for kind, splits in timing["splits"].items():
        phases[kind] = {"step": statistics.median(seconds for seconds, _ in splits)}
        for phase in PHASES:
            if any(phase in split for _, split in splits):
                phases[kind][phase] = statistics.median(split.get(phase, 0.0) for _, split in splits)
    return {"model": name, "resolution": resolution, "sizes": timing["sizes"], "depth": job["depth"], **medians,
            "ratio": statistics.median(ratios), "range": (min(ratios), max(ratios)), "memory": memory,
            "phases": phases}


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=list(REAL_MODELS), choices=[*REAL_MODELS, *TINY_MODELS])
    parser.add_argument("--resolution", type=int, default=256,
                        help="picture size in pixels (0: each model's native size; tiny models always use theirs)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of ours / theirs")
    parser.add_argument("--steps-per-round", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each kind first")
    parser.add_argument("--memory-steps", type=int, default=3, help="steps of each memory measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                        help="weights of the frozen model (fp16 needs CUDA)")
    parser.add_argument("--output", type=Path, default=None,
                        help="results file (default benchmarks/results/real_scale[_cuda].md)")
    parser.add_argument("--token-gradient", default="all", choices=TOKEN_GRADIENT_CHOICES,
                        help="ours with train's --token-gradient (the token learns through those cross-attention "
                        "layers only; a cheaper backward pass, and another gradient than theirs)")
    parser.add_argument("--depth", type=int, default=0,
                        help="Flux.1-dev with this many double-stream blocks, twice as many single-stream ones and "
                        "this many T5 layers, each at full width (0: all 19, 38 and 24; the whole model takes 67 GB in "
                        "fp32); the results extrapolate each stack's time to its full depth")
    parser.add_argument("--frozen-text", default="once", choices=("once", "every-step"),
                        help="ours on Flux: a frozen text encoder's output (T5's) computed once per prompt, as train "
                        "does, or every step (as theirs does; to measure what keeping it saves)")
    parser.add_argument("--count-only", action="store_true", help="print the models' parameter counts and stop")
    args = parser.parse_args()
    if args.count_only:
        count_only(args.models)
        return
    if args.precision == "fp16" and not args.device.startswith("cuda"):
        parser.error("--precision fp16 needs --device cuda (use bf16 or fp32 on the CPU)")
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            rows.append(measure(name, args, Path(workdir)))
            row = rows[-1]
            print(f"{name}: ours {row['ours']:.3f} s, theirs {row['theirs']:.3f} s, ratio {row['ratio']:.2f}; peak "
                  f"{mib(row['memory']['ours']['peak'])} / {mib(row['memory']['theirs']['peak'])} MiB", flush=True)
    output = args.output or RESULTS_DIR / f"real_scale{device_suffix(args.device)}.md"
    print_and_write(report(args, rows, (load_before, os.getloadavg()[0])), output)


if __name__ == "__main__":
    main()
