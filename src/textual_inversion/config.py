"""Configuration as plain dataclasses; a TOML file holds the same keys as the CLI options.

Each field's `help` metadata is the CLI option's help text, so the CLI mirrors the config 1:1:
`--batch-size` is `batch_size`, and a TOML file may say `batch_size = 4` or `batch-size = 4`. A training
method's own options (e.g. `--rank`) live in its options dataclass, `TrainConfig.options`; on the command
line and in TOML files they are flat keys like the others (`TrainConfig.from_values` sorts them).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .methods import METHODS, MethodOptions, get_method, method_option_fields, not_an_option_of
from .options import check_choices, coerce, option

PRECISIONS = ("no", "fp16", "bf16")
SAMPLERS = ("ddim", "ddpm", "pndm", "euler", "euler-a", "dpm++", "lms")  # generation.SCHEDULERS' names


def threads_option():
    """The --threads field every command has."""
    return option(None, "CPU threads torch computes with (default: $OMP_NUM_THREADS, else half the CPUs, at least 1, "
                        "so that a second job on the same machine does not make both crawl)")

LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


@dataclass
class TrainConfig:
    """Everything a training run needs; defaults give a sensible Textual Inversion run."""

    model: str = option("miniworld", "base model: hub id, local diffusers folder, single .safetensors/.ckpt file, or 'miniworld'")
    model_config: str | None = option(None, "diffusers folder or hub id giving the configs for a single-file --model (needed offline)")
    method: str = option("textual-inversion", "what learns; each method's own options are listed under its name")
    images: str = option("", "folder with 3-5 pictures of the subject (img.txt beside img.png is its caption, with {token})")
    token: str = option("", "the new word to learn, e.g. <my-cat>")
    property: str = option("object", "what the images show in common: an object or a style (picks the paper's prompt templates)", ("object", "style"))
    output_dir: str | None = option(None, "folder for everything the run writes (default runs/<token>)")
    steps: int | None = option(None, "optimizer steps (default: the method's, listed under its name)")
    lr: float | None = option(None, "learning rate (default: the method's, listed under its name)")
    scale_lr: bool = option(False, "multiply --lr by batch size x gradient accumulation")
    lr_scheduler: str | None = option(None, "learning-rate schedule (default: the method's on miniworld, listed under "
                                            "it, else constant)", LR_SCHEDULERS, usual="constant")
    lr_warmup_steps: int = option(0, "warm-up steps for the learning-rate schedule")
    weight_decay: float = option(0.0, "AdamW weight decay on the new embedding rows")
    adam_beta1: float = option(0.9, "AdamW's decay of its gradient average (diffusers' --adam_beta1)")
    adam_beta2: float = option(0.999, "AdamW's decay of its squared-gradient average (diffusers' --adam_beta2)")
    adam_epsilon: float = option(1e-8, "AdamW's epsilon (diffusers' --adam_epsilon)")
    ema_decay: float | None = option(None, "keep a moving average of what learns (decay per step, e.g. 0.9); "
                                          "previews, --stop-when-learned and the saved result use it (0: off; "
                                          "default: the method's on miniworld, listed under it, else 0)",
                                     usual=0.0)
    early_stop_window: int = option(0, "stop when the loss on a fixed batch settles: window of steps (0: off)")
    early_stop_threshold: float = option(0.1, "early stop when var(last window) < threshold x var(all steps)")
    stop_when_learned: bool = option(False, "miniworld only: every --learned-every steps, draw 8 images of the token "
                                            "and stop once --learned-share of them show what the judge reads on every "
                                            "training picture (shape, colour, pattern...), --learned-passes checks in "
                                            "a row")
    learned_every: int = option(25, "steps between the checks of --stop-when-learned")
    # benchmarks/results/stop_rule_pivotal_all_runs_2a05c6767420493f.md: over 52 pivotal-tuning runs on concepts of
    # benchmarks/concept_set.py, 7 of 8 images once ended 39 at the evaluation's 0.8 where 6 of 8 twice (the rule
    # until 2026-12-06) ended 31, in 126 steps on average against 151; chosen on 18 of the runs, held on the other 34.
    learned_share: float = option(0.875, "the fraction of a check's images that must show the pictures' shared "
                                         "attributes for --stop-when-learned to stop")
    learned_passes: int = option(1, "how many checks in a row must reach --learned-share for --stop-when-learned "
                                    "to stop")
    batch_size: int | None = option(None, "images per step (default: the method's on miniworld, listed under it, "
                                          "else 1)", usual=1)
    timesteps: str = option("uniform", "how a batch draws its noise levels: uniform (each on its own) or stratified "
                                       "(one from each of batch-size equal ranges: a less noisy gradient)",
                            ("uniform", "stratified"))
    noise_sampling: str = option("independent", "how a batch draws its noise: independent (each picture its own) or "
                                 "antithetic (half the batch's pictures, each twice at one noise level, with a noise "
                                 "and its negative; --batch-size even). Not a default: on miniworld's demo it learned "
                                 "no faster (docs/demo.md)", ("independent", "antithetic"))
    timestep_bias: str = option("none", "favour part of the noise schedule, as diffusers' --timestep_bias_strategy: "
                                        "later (the noisiest timesteps, where layout and coarse texture are decided), "
                                        "earlier (the cleanest: fine detail), range (--timestep-bias-begin "
                                        "to --timestep-bias-end) or none", ("none", "later", "earlier", "range"))
    timestep_bias_portion: float = option(0.25, "later/earlier: the share of the schedule favoured, e.g. 0.1")
    timestep_bias_multiplier: float = option(1.0, "how many times likelier a favoured timestep is drawn (9 with "
                                                  "portion 0.1: half the draws in that tenth)")
    timestep_bias_begin: int = option(0, "range: the first favoured timestep")
    timestep_bias_end: int = option(1000, "range: the favoured timesteps end before this one")
    timestep_bias_steps: int = option(0, "the bias for this many steps from the start, the uniform draw after (0: "
                                         "every step). Not a default: on miniworld the noisier half for the first 300 "
                                         "steps sped the demo's concept and lost the concept set's (docs/demo.md)")
    snr_gamma: float = option(0.0, "min-SNR loss weighting (Hang et al. 2023; diffusers' --snr_gamma, kohya's "
                                   "--min_snr_gamma): the nearly clean timesteps count less; 5 is the paper's value "
                                   "(0: off; UNet models only)")
    grad_accum: int = option(1, "micro-batches accumulated per optimizer step")
    resolution: int | None = option(None, "training resolution in pixels (default: the model's native size)")
    bucket: bool = option(True, "aspect-ratio bucketing: each picture trains at the bucket size (about resolution² "
                                "pixels, 2:1 to 1:2) nearest its shape; --no-bucket cuts squares")
    crop: str = option("center", "where to cut each picture to its size (the square with --no-bucket)", ("center", "random"))
    crop_variants: int = option(4, "with --crop random: random crops encoded per image")
    mask_weight: float = option(0.0, "loss weight outside a picture's mask (img.mask.png beside img.png, or its alpha "
                                     "channel; white = subject): 0 learns none of the background, 1 ignores the mask")
    flip: bool = option(True, "also train on the mirrored images")
    refine_latents: int = option(0, "Adam steps that move each picture's cached latent until the VAE's decoder redraws "
                                    "the picture, for detail its encoder loses (on miniworld a small star on grey "
                                    "encodes to a dot and decodes from the refined latent as a star); 0: the "
                                    "encoder's latents as they are")
    class_prompt: str | None = option(None, "prior preservation (dreambooth, lora): prompt for the class, e.g. 'a photo of a dog'")
    num_class_images: int = option(50, "prior preservation: class images generated once by the base model")
    prior_loss_weight: float = option(1.0, "prior preservation: weight of the class-image loss")
    mixed_precision: str = option("no", "precision of the frozen model during training (fp16 needs a GPU)", PRECISIONS)
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass: less memory, more time")
    use_8bit_adam: bool = option(False, "8-bit AdamW from bitsandbytes (GPU memory saver; needs bitsandbytes)")
    quantize_transformer: str = option("no", "load the frozen Flux/SD3/Z-Image transformer quantised: nf4 (4-bit, "
                                       "bitsandbytes, CUDA only) or fp8 (8-bit float weights, optimum-quanto)",
                                       ("no", "nf4", "fp8"))
    compile: bool = option(False, "torch.compile the UNet (pays off on long GPU runs)")
    channels_last: bool = option(False, "channels-last memory layout for the UNet (faster convolutions on some GPUs)")
    seed: int = option(0, "random seed; the same seed gives the same embedding")
    validation_prompt: str | None = option(None, "prompt for preview images during training, e.g. 'a photo of <my-cat> on a beach'")
    validation_every: int = option(100, "render previews every N steps (with --validation-prompt)")
    num_validation_images: int = option(4, "preview images per validation")
    validation_steps: int = option(25, "sampling steps for preview images")
    validation_guidance: float | None = option(None, "classifier-free guidance scale for preview images (default: "
                                               "the pipeline's own, as for generate)")
    validation_sampler: str | None = option(None, f"sampler for preview images: {', '.join(SAMPLERS)} (default: the "
                                                  "model's, as for generate)")
    checkpoint_every: int = option(100, "write a resumable checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = option(2, "how many of the newest checkpoints to keep (0: all)")
    resume: bool = option(False, "continue from the latest checkpoint in --output-dir")
    overwrite: bool = option(False, "allow writing into an --output-dir that holds another run")
    device: str = option("auto", "device: auto, cpu, cuda, cuda:1, mps")
    threads: int | None = threads_option()
    # The method's own options: its options dataclass, or a dict of its fields (None: its defaults).
    options: MethodOptions | dict | None = field(default=None, metadata={"help": None, "choices": None})

    def __post_init__(self) -> None:
        method = get_method(self.method)
        if self.options is None:
            self.options = method.options_class()
        elif isinstance(self.options, dict):
            known = {f.name for f in dataclasses.fields(method.options_class)}
            strangers = [name for name in self.options if name not in known]
            if strangers:
                raise UserError(not_an_option_of(self.method, strangers))
            self.options = coerce(method.options_class, self.options, "options")
        elif type(self.options) is not method.options_class:
            raise UserError(f"options: {type(self.options).__name__} are not the options of --method {self.method} "
                            f"({method.options_class.__name__})")
        # Resolved once, when the config is made, so that run.json and a resumed run see the values used.
        measured = method.defaults_on_miniworld(self.options) if self.model == "miniworld" else {}
        if self.steps is None:
            self.steps = measured.get("steps", method.default_steps)
        if self.lr is None and "lr" in measured:
            self.lr = measured["lr"]
        for owner in (self, self.options):  # the options whose default depends on the model: see option()
            for config_field in dataclasses.fields(owner):
                usual = config_field.metadata.get("usual")
                if usual is not None and getattr(owner, config_field.name) is None:
                    setattr(owner, config_field.name, measured.get(config_field.name, usual))

    @classmethod
    def from_values(cls, values: dict[str, Any], source: str = "options", lenient: bool = False) -> TrainConfig:
        """A TrainConfig from flat option values (command line, TOML, form), the method's own ones included.

        An option of another method is an error naming whose it is; with `lenient` (the web page, whose form
        shows every method's options) it is left out.
        """
        own = {f.name for f in dataclasses.fields(cls)} - {"options"}
        method = get_method(values.get("method", cls.method))
        mine = {f.name for f in dataclasses.fields(method.options_class)}
        others = [name for name in values if name not in own and name not in mine]
        if others and not lenient:
            raise UserError(f"{source}: {not_an_option_of(method.name, others)}")
        options = coerce(method.options_class, {k: v for k, v in values.items() if k in mine}, source)
        return coerce(cls, {k: v for k, v in values.items() if k in own}, source, options=options)

    def replaced(self, **values: Any) -> TrainConfig:
        """A copy with `values` changed, given flat as on the command line (a method's options among them);
        with another `method`, the options it shares with the current one are kept and the rest left behind."""
        current = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        current.update(vars(self.options))
        method = get_method(values.get("method", self.method))
        keep = {f.name for f in dataclasses.fields(self)} | {f.name for f in dataclasses.fields(method.options_class)}
        return TrainConfig.from_values({**{k: v for k, v in current.items() if k in keep}, **values})

    @staticmethod
    def option_names() -> set[str]:
        """Every option a TOML file or the command line may give: the common ones and every method's."""
        return ({f.name for f in dataclasses.fields(TrainConfig)} - {"options"}) | set(method_option_fields())

    def resolved_output_dir(self) -> Path:
        """`output_dir`, or `runs/<token>` with the token's brackets and odd characters removed."""
        if self.output_dir:
            return Path(self.output_dir)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.token).strip("-.") or "concept"
        return Path("runs") / slug

    def learning_rate(self) -> float:
        """--lr, or the method's usual learning rate."""
        return self.lr if self.lr is not None else get_method(self.method).default_lr

    def validate(self) -> None:
        """Raise UserError naming the first option whose value cannot work."""
        if not self.images:
            raise UserError("--images is required: a folder with 3-5 pictures of your subject")
        if not self.token or any(ch.isspace() for ch in self.token):
            raise UserError(f"--token {self.token!r}: give one new word without spaces, e.g. <my-cat>")
        method = get_method(self.method)
        check_choices(self)
        check_choices(self.options)
        method.validate(self)
        positive = {"steps": self.steps, "batch-size": self.batch_size, "grad-accum": self.grad_accum,
                    "crop-variants": self.crop_variants, "validation-every": self.validation_every,
                    "num-validation-images": self.num_validation_images, "validation-steps": self.validation_steps,
                    "learned-every": self.learned_every, "learned-passes": self.learned_passes}
        for name, value in positive.items():
            if value < 1:
                raise UserError(f"--{name} {value}: must be at least 1")
        if not 0 < self.learning_rate() < 1:
            raise UserError(f"--lr {self.lr}: must be between 0 and 1 (Textual Inversion uses about 5e-3)")
        if self.class_prompt is not None and (not method.prior_preservation or self.num_class_images < 1):
            with_prior = " or ".join(name for name, known in METHODS.items() if known.prior_preservation)
            raise UserError(f"--class-prompt (prior preservation) works with --method {with_prior} and "
                            "--num-class-images of at least 1")
        if self.refine_latents < 0:
            raise UserError(f"--refine-latents {self.refine_latents}: give a number of steps, 0 (off) or more")
        if not 0 <= self.mask_weight <= 1:
            raise UserError(f"--mask-weight {self.mask_weight}: must be between 0 (background not learned) and 1")
        if self.snr_gamma < 0:
            raise UserError(f"--snr-gamma {self.snr_gamma}: cannot be negative (0 turns the weighting off; 5 is usual)")
        if self.prior_loss_weight < 0:
            raise UserError(f"--prior-loss-weight {self.prior_loss_weight}: cannot be negative")
        if self.validation_guidance is not None and self.validation_guidance < 0:
            raise UserError(f"--validation-guidance {self.validation_guidance}: cannot be negative")
        if self.validation_sampler is not None and self.validation_sampler not in SAMPLERS:
            raise UserError(f"--validation-sampler {self.validation_sampler}: choose one of {', '.join(SAMPLERS)}")
        if self.keep_checkpoints < 0:
            raise UserError(f"--keep-checkpoints {self.keep_checkpoints}: cannot be negative (0 keeps all)")
        if self.early_stop_window < 0 or not 0 < self.early_stop_threshold < 1:
            raise UserError("--early-stop-window cannot be negative and --early-stop-threshold must be between 0 and 1")
        if self.stop_when_learned and self.model != "miniworld":
            raise UserError(f"--stop-when-learned reads images with miniworld's judge, which knows only miniworld; with "
                            f"--model {self.model} use --early-stop-window or previews (--validation-prompt) instead")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"--ema-decay {self.ema_decay}: must be at least 0 (off) and below 1, e.g. 0.9")
        if not 0 < self.learned_share <= 1:
            raise UserError(f"--learned-share {self.learned_share}: must be above 0 and at most 1")
        for name, beta in (("--adam-beta1", self.adam_beta1), ("--adam-beta2", self.adam_beta2)):
            if not 0 <= beta < 1:
                raise UserError(f"{name} {beta}: must be at least 0 and below 1, e.g. 0.9")
        if self.adam_epsilon <= 0:
            raise UserError(f"--adam-epsilon {self.adam_epsilon}: must be above 0, e.g. 1e-8")
        if self.checkpoint_every < 0 or self.lr_warmup_steps < 0 or self.weight_decay < 0:
            raise UserError("--checkpoint-every, --lr-warmup-steps and --weight-decay cannot be negative")
        if self.lr_warmup_steps and self.lr_scheduler == "constant":  # diffusers' constant schedule ignores warm-up
            raise UserError(f"--lr-warmup-steps {self.lr_warmup_steps} has no effect with --lr-scheduler constant: "
                            "pass --lr-scheduler constant_with_warmup (or another schedule)")
        if self.noise_sampling == "antithetic" and self.batch_size % 2:
            raise UserError(f"--noise-sampling antithetic pairs the batch's pictures: --batch-size {self.batch_size} "
                            "must be even, e.g. 4")
        if self.timestep_bias != "none":
            if self.timestep_bias_multiplier == 1:  # diffusers' default, which makes its strategy a no-op
                raise UserError(f"--timestep-bias {self.timestep_bias} with --timestep-bias-multiplier 1.0 has no "
                                "effect: pass a multiplier, e.g. 9 (above 1 favours the span, below 1 avoids it)")
            if self.timestep_bias_multiplier <= 0:
                raise UserError(f"--timestep-bias-multiplier {self.timestep_bias_multiplier}: must be above 0")
            if not 0 < self.timestep_bias_portion < 1:
                raise UserError(f"--timestep-bias-portion {self.timestep_bias_portion}: must be between 0 and 1, "
                                "e.g. 0.1 for a tenth of the schedule")
            if not 0 <= self.timestep_bias_begin < self.timestep_bias_end:
                raise UserError(f"--timestep-bias-begin {self.timestep_bias_begin} and --timestep-bias-end "
                                f"{self.timestep_bias_end}: need 0 <= begin < end")
        if self.timestep_bias_steps < 0:
            raise UserError(f"--timestep-bias-steps {self.timestep_bias_steps}: must be 0 (every step) or more")
        if self.timestep_bias_steps and self.timestep_bias == "none":
            raise UserError(f"--timestep-bias-steps {self.timestep_bias_steps} has no effect without --timestep-bias: "
                            "pass e.g. --timestep-bias later --timestep-bias-multiplier 3")
        if self.timestep_bias_steps >= self.steps:
            raise UserError(f"--timestep-bias-steps {self.timestep_bias_steps} covers all {self.steps} steps: leave it "
                            "out to bias every step, or give fewer than --steps")
        if self.resolution is not None and (self.resolution < 32 or self.resolution % 8):
            raise UserError(f"--resolution {self.resolution}: must be a multiple of 8 and at least 32")
        if self.validation_prompt is not None and self.token not in self.validation_prompt:
            raise UserError(f"--validation-prompt {self.validation_prompt!r} does not contain the token {self.token}")


def field_choices(config_class: type, config_field: dataclasses.Field) -> tuple | None:
    """The values a field allows (for the CLI's choices and the form's lists): its own, or for
    TrainConfig.method every registered method."""
    if config_class is TrainConfig and config_field.name == "method":
        return tuple(METHODS)
    return config_field.metadata.get("choices")


@dataclass
class GenerateConfig:
    """A generation request: model, learned concepts, prompt and sampling settings."""

    model: str = option("miniworld", "base model: hub id, local diffusers folder, single-file checkpoint, or 'miniworld'")
    model_config: str | None = option(None, "diffusers folder or hub id giving the configs for a single-file --model")
    concept: list = option([], "learned concept: embedding file, run folder, or concept-library repo id (repeatable)")
    prompt: str = option("", "the prompt, using the concepts' tokens, e.g. 'a photo of <my-cat> on the beach'")
    negative_prompt: str | None = option(None, "what to keep out of the images")
    num_images: int = option(4, "images to generate")
    steps: int = option(25, "sampling steps")
    guidance: float | None = option(None, "classifier-free guidance scale (default: the pipeline's own: 7.5 for SD "
                                    "1.x/2.x, 5 for SDXL and Z-Image, 3.5 for Flux, 7 for SD3)")
    seed: int = option(0, "seed of the first image; image i uses seed + i")
    scheduler: str | None = option(None, f"sampler: {', '.join(SAMPLERS)} (default: the model's)")
    width: int | None = option(None, "image width in pixels (default: the model's native size)")
    height: int | None = option(None, "image height in pixels (default: the model's native size)")
    output_dir: str | None = option(None, "folder for the PNGs and their grid (default: a new outputs/<date-time>)")
    overwrite: bool = option(False, "allow writing into an --output-dir that holds images already")
    precision: str = option("auto", "weights precision: auto (fp16 on GPU, fp32 on CPU), fp32, fp16, bf16", ("auto", "fp32", "fp16", "bf16"))
    device: str = option("auto", "device: auto, cpu, cuda, cuda:1, mps")
    threads: int | None = threads_option()

    def validate(self) -> None:
        """Raise UserError naming the first option whose value cannot work."""
        if not self.prompt:
            raise UserError("--prompt is required")
        for name in ("num_images", "steps"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and (value < 8 or value % 8):
                raise UserError(f"--{name} {value}: must be a positive multiple of 8")
        if self.guidance is not None and self.guidance < 0:
            raise UserError(f"--guidance {self.guidance}: cannot be negative")
        check_choices(self)


@dataclass
class EvaluateConfig:
    """Measure learned concepts: DINO, CLIP-I, CLIP-T against the training images, and on miniworld the judge."""

    model: str = option("miniworld", "base model the concepts were learned on")
    model_config: str | None = option(None, "diffusers folder or hub id giving the configs for a single-file --model")
    concept: list = option([], "learned concept: embedding file, LoRA, or run folder (repeat to compare runs)")
    images: str | None = option(None, "the training images, for DINO and CLIP-I (DreamBench metrics)")
    concept_spec: str | None = option(None, "miniworld: the concept's concept.toml, for the ground-truth judge")
    prompts: str | None = option(None, "text file, one prompt per line with {token} (default: DreamBench's prompts)")
    property: str = option("object", "which default prompt set: object or style", ("object", "style"))
    clip: str = option("openai/clip-vit-base-patch32", "CLIP model (hub id or folder) for CLIP-I and CLIP-T")
    dino: str = option("facebook/dino-vits16", "DINO model (hub id or folder) for the DINO score")
    output_dir: str = option("evaluation", "folder for evaluation.json, report.html and the image grids")
    num_images: int = option(4, "images per prompt")
    steps: int = option(25, "sampling steps")
    guidance: float = option(4.0, "classifier-free guidance scale")
    seed: int = option(0, "seed of the first image of each prompt")
    device: str = option("auto", "device: auto, cpu, cuda, mps")
    threads: int | None = threads_option()

    def validate(self) -> None:
        if not self.concept:
            raise UserError("--concept is required: the embedding file or run folder to evaluate")
        if not self.images and not self.concept_spec:
            raise UserError("give --images (the training images, for DINO/CLIP scores) and/or --concept-spec "
                            "(a miniworld concept.toml, for the ground-truth judge)")
        for name in ("num_images", "steps"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        check_choices(self)


# The demo's training steps; --fast's run usually stops before its cap (docs/demo.md).
DEMO_STEPS = 800
FAST_DEMO_STEPS = 300


@dataclass
class DemoConfig:
    """The offline demo: teach miniworld a colour it can draw but has no word for, then measure it."""

    output_dir: str = option("runs/demo", "folder for the images, the run, previews and the evaluation")
    steps: int | None = option(None, f"training steps (default {DEMO_STEPS}; with --fast at most {FAST_DEMO_STEPS}, "
                               "the run stopping when the concept is learned)")
    fast: bool = option(False, "a faster demo: pivotal tuning (the token and a rank-8 LoRA, a 525 KB file) that stops "
                        "once 7 of 8 check images show the concept at two checks in a row (docs/demo.md)")
    seed: int = option(0, "random seed")
    overwrite: bool = option(False, "replace an earlier demo in --output-dir")
    device: str = option("auto", "device: auto, cpu, cuda, mps")
    threads: int | None = threads_option()

    @property
    def training_steps(self) -> int:
        """--steps, or the default for the demo asked for."""
        if self.steps is not None:
            return self.steps
        return FAST_DEMO_STEPS if self.fast else DEMO_STEPS

    def validate(self) -> None:
        if self.training_steps < 1:
            raise UserError(f"--steps {self.steps}: must be at least 1")


@dataclass
class UIConfig:
    """The local web page: where it listens, which model it teaches, where runs and images go."""

    host: str = option("127.0.0.1", "address to listen on; one that other machines can reach needs --allow-remote")
    port: int | None = option(None, "port to listen on (default: the first free one from 7860)")
    allow_remote: bool = option(False, "allow a --host that other machines can reach (the page has no password)")
    model: str = option("miniworld", "base model to teach and generate with: hub id, local diffusers folder, "
                        "single-file checkpoint, or 'miniworld'")
    model_config: str | None = option(None, "diffusers folder or hub id giving the configs for a single-file --model")
    runs_dir: str = option("runs", "folder where training runs are written and learned concepts are found")
    outputs_dir: str = option("outputs", "folder for generated images")
    device: str = option("auto", "device: auto, cpu, cuda, cuda:1, mps")
    threads: int | None = threads_option()

    def validate(self) -> None:
        """Raise UserError naming the first option whose value cannot work."""
        if self.port is not None and not 1 <= self.port <= 65535:
            raise UserError(f"--port {self.port}: must be between 1 and 65535")
        if not self.allow_remote and not is_loopback(self.host):
            raise UserError(f"--host {self.host}: other machines could reach the page, which has no password; "
                            "pass --allow-remote if you mean it, or leave --host at 127.0.0.1")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (localhost, 127.x, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
