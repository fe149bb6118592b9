"""Configuration as plain dataclasses; a TOML file holds the same keys as the CLI options.

Each field's `help` metadata is the CLI option's help text, so the CLI mirrors the config 1:1:
`--init-token` is `init_token`, and a TOML file may say `init_token = "cat"` or `init-token = "cat"`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError

PRECISIONS = ("no", "fp16", "bf16")
METHOD_NAMES = ("textual-inversion", "dreambooth", "lora", "pivotal", "lidb", "hyperdreambooth")
# Learning rates that work for each method on Stable Diffusion (diffusers' example scripts); hyperdreambooth's
# 40-step fine-tune from the prediction was tuned on miniworld (benchmarks/results/hyperdreambooth_tune.md).
DEFAULT_LR = {"textual-inversion": 5e-3, "dreambooth": 5e-6, "lora": 1e-4, "pivotal": 5e-3, "lidb": 1e-3,
              "hyperdreambooth": 3e-3}
DEFAULT_STEPS = {"hyperdreambooth": 40}  # the paper's fast fine-tune; every other method: 500
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


def option(default: Any, help: str, choices: tuple | None = None, **kwargs) -> Any:
    """A config field carrying its CLI help text (and allowed values)."""
    metadata = {"help": help, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


@dataclass
class TrainConfig:
    """Everything a training run needs; defaults give a sensible Textual Inversion run."""

    model: str = option("miniworld", "base model: hub id, local diffusers folder, single .safetensors/.ckpt file, or 'miniworld'")
    model_config: str | None = option(None, "diffusers folder or hub id giving the configs for a single-file --model (needed offline)")
    method: str = option("textual-inversion", "what learns: new token embeddings (textual-inversion), the whole UNet "
                         "(dreambooth), low-rank adapters (lora), embeddings and adapters together (pivotal), rank-1 lightweight "
                         "DreamBooth weights (lidb), or a hypernetwork's prediction from one image, then a short LoRA "
                         "fine-tune (hyperdreambooth)", METHOD_NAMES)
    images: str = option("", "folder with 3-5 pictures of the subject (img.txt beside img.png is its caption, with {token})")
    token: str = option("", "the new word to learn, e.g. <my-cat>")
    init_token: str = option("", "word(s) the new token starts from, e.g. cat (textual-inversion, pivotal)")
    vectors: int = option(1, "number of embedding vectors for the token (multi-vector tokens hold more detail)")
    property: str = option("object", "what the images show in common: an object or a style (picks the paper's prompt templates)", ("object", "style"))
    output_dir: str | None = option(None, "folder for everything the run writes (default runs/<token>)")
    steps: int | None = option(None, "optimizer steps (default per method: 500; hyperdreambooth 40)")
    lr: float | None = option(None, "learning rate (default per method: textual-inversion 5e-3, dreambooth 5e-6, "
                              "lora 1e-4, pivotal 5e-3 for the embeddings, lidb 1e-3, hyperdreambooth 3e-3)")
    scale_lr: bool = option(False, "multiply --lr by batch size x gradient accumulation")
    lr_scheduler: str = option("constant", "learning-rate schedule", LR_SCHEDULERS)
    lr_warmup_steps: int = option(0, "warm-up steps for the learning-rate schedule")
    weight_decay: float = option(0.0, "AdamW weight decay on the new embedding rows")
    init_strategy: str = option("word", "where the new vectors start: the initializer word's input embedding (word) or "
                                "the text encoder's output for it (cross, as in Cross-Initialization)", ("word", "cross"))
    keep_norm: bool = option(False, "keep each new vector at its initial length (a regulariser against drifting norms)")
    early_stop_window: int = option(0, "stop when the loss on a fixed batch settles: window of steps (0: off)")
    early_stop_threshold: float = option(0.1, "early stop when var(last window) < threshold x var(all steps)")
    batch_size: int = option(1, "images per step")
    grad_accum: int = option(1, "micro-batches accumulated per optimizer step")
    resolution: int | None = option(None, "training resolution in pixels (default: the model's native size)")
    crop: str = option("center", "how to cut a square from each image", ("center", "random"))
    crop_variants: int = option(4, "with --crop random: random crops encoded per image")
    flip: bool = option(True, "also train on the mirrored images")
    rank: int = option(4, "LoRA rank (lora, pivotal)")
    lora_alpha: float | None = option(None, "LoRA alpha; the update is scaled by alpha / rank (default: the rank)")
    lora_lr: float = option(1e-4, "learning rate of the LoRA weights in pivotal tuning")
    lora_text_encoder: bool = option(False, "also put LoRA adapters on the text encoder(s) (lora, pivotal)")
    kohya_copy: bool = option(False, "also write the LoRA in kohya/AUTOMATIC1111 layout (lora_kohya.safetensors)")
    down_dim: int = option(100, "lidb: width of the frozen random down projection (paper 100; clamped to each layer)")
    up_dim: int = option(50, "lidb: width of the frozen random up projection (paper 50; clamped to each layer)")
    lidb_layers: str = option("all", "lidb: which projections learn: every attention projection (paper) or only the "
                              "cross-attention keys and values, where the prompt enters (as Custom Diffusion)",
                              ("all", "cross-kv"))
    lidb_down: str = option("learn", "lidb: the down factor learns (paper), or is fixed to a reader of the token's text "
                            "features, so the update changes only what the token says (needs --lidb-layers cross-kv)",
                            ("learn", "token"))
    hypernetwork: str | None = option(None, "hyperdreambooth: folder of a trained hypernetwork (default: the one "
                                      "bundled for miniworld)")
    train_text_encoder: bool = option(False, "dreambooth: also fine-tune the text encoder(s)")
    ti_fraction: float = option(1.0, "pivotal: fraction of the steps during which the embeddings learn")
    class_prompt: str | None = option(None, "dreambooth/lora prior preservation: prompt for the class, e.g. 'a photo of a dog'")
    num_class_images: int = option(50, "prior preservation: class images generated once by the base model")
    prior_loss_weight: float = option(1.0, "prior preservation: weight of the class-image loss")
    mixed_precision: str = option("no", "precision of the frozen model during training (fp16 needs a GPU)", PRECISIONS)
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass: less memory, more time")
    use_8bit_adam: bool = option(False, "8-bit AdamW from bitsandbytes (GPU memory saver; needs bitsandbytes)")
    compile: bool = option(False, "torch.compile the UNet (pays off on long GPU runs)")
    channels_last: bool = option(False, "channels-last memory layout for the UNet (faster convolutions on some GPUs)")
    seed: int = option(0, "random seed; the same seed gives the same embedding")
    validation_prompt: str | None = option(None, "prompt for preview images during training, e.g. 'a photo of <my-cat> on a beach'")
    validation_every: int = option(100, "render previews every N steps (with --validation-prompt)")
    num_validation_images: int = option(4, "preview images per validation")
    validation_steps: int = option(25, "sampling steps for preview images")
    validation_guidance: float = option(7.5, "classifier-free guidance scale for preview images")
    checkpoint_every: int = option(100, "write a resumable checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = option(2, "how many of the newest checkpoints to keep (0: all)")
    resume: bool = option(False, "continue from the latest checkpoint in --output-dir")
    overwrite: bool = option(False, "allow writing into an --output-dir that holds another run")
    device: str = option("auto", "device: auto, cpu, cuda, cuda:1, mps")

    def __post_init__(self) -> None:
        if self.steps is None:  # resolved once, when the config is made: the method's usual run length
            self.steps = DEFAULT_STEPS.get(self.method, 500)

    def resolved_output_dir(self) -> Path:
        """`output_dir`, or `runs/<token>` with the token's brackets and odd characters removed."""
        if self.output_dir:
            return Path(self.output_dir)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.token).strip("-.") or "concept"
        return Path("runs") / slug

    def learning_rate(self) -> float:
        """--lr, or the method's usual learning rate."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    def validate(self) -> None:
        """Raise UserError naming the first option whose value cannot work."""
        if not self.images:
            raise UserError("--images is required: a folder with 3-5 pictures of your subject")
        if not self.token or any(ch.isspace() for ch in self.token):
            raise UserError(f"--token {self.token!r}: give one new word without spaces, e.g. <my-cat>")
        check_choices(self)
        if self.method in ("textual-inversion", "pivotal") and not self.init_token.strip():
            raise UserError("--init-token is required: a word close to your subject, e.g. cat")
        positive = {"vectors": self.vectors, "steps": self.steps, "batch-size": self.batch_size,
                    "grad-accum": self.grad_accum, "crop-variants": self.crop_variants,
                    "validation-every": self.validation_every, "num-validation-images": self.num_validation_images,
                    "validation-steps": self.validation_steps}
        for name, value in positive.items():
            if value < 1:
                raise UserError(f"--{name} {value}: must be at least 1")
        if self.vectors > 75:
            raise UserError(f"--vectors {self.vectors}: a prompt holds at most 75 tokens; use 1-16")
        if not 0 < self.learning_rate() < 1:
            raise UserError(f"--lr {self.lr}: must be between 0 and 1 (Textual Inversion uses about 5e-3)")
        if not 0 < self.lora_lr < 1 or self.rank < 1 or (self.lora_alpha is not None and self.lora_alpha <= 0):
            raise UserError("--lora-lr must be between 0 and 1, --rank at least 1, --lora-alpha positive")
        if not 0 <= self.ti_fraction <= 1:
            raise UserError(f"--ti-fraction {self.ti_fraction}: must be between 0 and 1")
        if self.class_prompt is not None and (self.method not in ("dreambooth", "lora") or self.num_class_images < 1):
            raise UserError("--class-prompt (prior preservation) works with --method dreambooth or lora and "
                            "--num-class-images of at least 1")
        if self.prior_loss_weight < 0:
            raise UserError(f"--prior-loss-weight {self.prior_loss_weight}: cannot be negative")
        if self.train_text_encoder and self.method != "dreambooth":
            raise UserError("--train-text-encoder is for --method dreambooth; for lora use --lora-text-encoder")
        if self.down_dim < 1 or self.up_dim < 1:
            raise UserError("--down-dim and --up-dim must be at least 1 (the paper uses 100 and 50)")
        if self.lidb_down == "token" and self.lidb_layers != "cross-kv":
            raise UserError("--lidb-down token reads the prompt's text features, which only the cross-attention keys "
                            "and values see: add --lidb-layers cross-kv")
        if self.keep_checkpoints < 0:
            raise UserError(f"--keep-checkpoints {self.keep_checkpoints}: cannot be negative (0 keeps all)")
        if self.early_stop_window < 0 or not 0 < self.early_stop_threshold < 1:
            raise UserError("--early-stop-window cannot be negative and --early-stop-threshold must be between 0 and 1")
        if self.checkpoint_every < 0 or self.lr_warmup_steps < 0 or self.weight_decay < 0:
            raise UserError("--checkpoint-every, --lr-warmup-steps and --weight-decay cannot be negative")
        if self.lr_warmup_steps and self.lr_scheduler == "constant":  # diffusers' constant schedule ignores warm-up
            raise UserError(f"--lr-warmup-steps {self.lr_warmup_steps} has no effect with --lr-scheduler constant: "
                            "pass --lr-scheduler constant_with_warmup (or another schedule)")
        if self.resolution is not None and (self.resolution < 32 or self.resolution % 8):
            raise UserError(f"--resolution {self.resolution}: must be a multiple of 8 and at least 32")
        if self.validation_prompt is not None and self.token not in self.validation_prompt:
            raise UserError(f"--validation-prompt {self.validation_prompt!r} does not contain the token {self.token}")


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
    guidance: float = option(7.5, "classifier-free guidance scale")
    seed: int = option(0, "seed of the first image; image i uses seed + i")
    scheduler: str | None = option(None, "sampler: ddim, ddpm, pndm, euler, euler-a, dpm++, lms (default: the model's)")
    width: int | None = option(None, "image width in pixels (default: the model's native size)")
    height: int | None = option(None, "image height in pixels (default: the model's native size)")
    output_dir: str = option("outputs", "folder for the PNGs and their grid")
    precision: str = option("auto", "weights precision: auto (fp16 on GPU, fp32 on CPU), fp32, fp16, bf16", ("auto", "fp32", "fp16", "bf16"))
    device: str = option("auto", "device: auto, cpu, cuda, cuda:1, mps")

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
        if self.guidance < 0:
            raise UserError(f"--guidance {self.guidance}: cannot be negative")
        check_choices(self)


def check_choices(config) -> None:
    """Raise UserError for a value outside a field's allowed choices."""
    for config_field in dataclasses.fields(config):
        choices = config_field.metadata.get("choices")
        value = getattr(config, config_field.name)
        if choices and value not in choices:
            raise UserError(f"--{config_field.name.replace('_', '-')} {value!r}: choose one of {', '.join(choices)}")


def read_toml(path: str | Path, config_class: type) -> dict[str, Any]:
    """Read a TOML file of options for `config_class`; unknown keys and wrong types are errors."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"--config {path}: not valid TOML ({error})") from None
    known = {f.name: f for f in dataclasses.fields(config_class)}
    values = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            raise UserError(f"--config {path}: unknown option {key!r}; see --help for the option names")
        values[name] = value
    return values


def coerce(config_class: type, values: dict[str, Any], source: str) -> Any:
    """Build `config_class` from `values`, converting TOML/CLI types and naming a bad one."""
    types = {f.name: f.type for f in dataclasses.fields(config_class)}
    converted = {}
    for name, value in values.items():
        kind = str(types[name])
        try:
            if value is None or kind.startswith("list"):
                converted[name] = list(value) if kind.startswith("list") and value is not None else value
            elif kind.startswith("bool"):
                if not isinstance(value, bool):
                    raise ValueError
                converted[name] = value
            elif kind.startswith("int"):
                if isinstance(value, bool) or float(value) != int(value):
                    raise ValueError
                converted[name] = int(value)
            elif kind.startswith("float"):
                converted[name] = float(value)
            else:
                converted[name] = str(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
            raise UserError(f"{source}: option {name.replace('_', '-')!r} has the wrong type ({value!r}, expected {kind})") from None
    return config_class(**converted)


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


@dataclass
class DemoConfig:
    """The offline demo: teach miniworld a colour it can draw but has no word for, then measure it."""

    output_dir: str = option("runs/demo", "folder for the images, the run, previews and the evaluation")
    steps: int = option(800, "training steps")
    seed: int = option(0, "random seed")
    overwrite: bool = option(False, "replace an earlier demo in --output-dir")
    device: str = option("auto", "device: auto, cpu, cuda, mps")

    def validate(self) -> None:
        if self.steps < 1:
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
