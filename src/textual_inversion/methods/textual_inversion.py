"""Textual Inversion (Gal et al. 2022): only new token embeddings learn; the model stays frozen."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..options import option
from ..outputs import EMBEDDING, EXTENDED, OUTPUT_FILES
from .base import Method, MethodOptions

SHARED = "shared"  # with --shared-vectors, the shared set's key in `rows` and in checkpoints
MAX_VECTORS = 75  # a CLIP prompt holds 77 tokens: start, end and at most 75 others
TOKEN_GRADIENT_CHOICES = ("all", "up", "finest")

logger = logging.getLogger(__name__)


@dataclass
class TextualInversionOptions(MethodOptions):
    init_token: str = option("", "word(s) the new token starts from, e.g. cat")
    vectors: int | None = option(None, "number of embedding vectors for the token (multi-vector tokens hold more "
                                 "detail; default: the method's on miniworld, listed under it, else 1)", usual=1)
    init_strategy: str = option("word", "where the new vectors start: the initializer word's input embedding (word) or "
                                "the text encoder's output for it (cross, as in Cross-Initialization)", ("word", "cross"))
    keep_norm: bool = option(False, "keep each new vector at its initial length (a regulariser against drifting norms)")
    init_embedding: str = option("", "embedding file (any format inspect reads) the new token starts from, instead of "
                                 "--init-token; the token gets the file's vectors, so --vectors may be left out")
    ti_encoders: str = option("", "text encoders that learn the token, by file key, e.g. clip_l,t5 for Flux "
                              "(default: every encoder of the model; Flux, SD3 and Z-Image only)")
    per_layer: bool = option(False, "extended textual conditioning (P+): the token gets its own vectors for each of the "
                             "UNet's cross-attention layers (SD 1.x/2.x, miniworld); also writes the mean of its "
                             "vectors as a standard embedding")
    time_stages: int = option(1, "the token gets its own vectors for each of this many denoising stages (equal ranges "
                              "of the timesteps, as in NeTI/ProSpect); with --per-layer, per layer and stage")
    shared_vectors: bool = option(False, "with --time-stages or --per-layer: each set of vectors is one shared set plus "
                                  "an offset of its own, so the shared set learns from every sample and each offset "
                                  "only what its stage or layer adds")
    token_gradient: str = option("all", "the UNet's cross-attention layers the token learns through: all, up (the up "
                                 "blocks') or finest (the up blocks' last, at the highest resolution); elsewhere the "
                                 "backward pass stops, so a step computes less (SD 1.x/2.x, SDXL, miniworld)",
                                 TOKEN_GRADIENT_CHOICES)
    token_gradient_fraction: float = option(1.0, "with --token-gradient up or finest: the fraction of the steps, from "
                                            "the first, that learn through those layers only; the rest learn through "
                                            "every layer")
    context_weight: float = option(0.0, "context regularisation (CoRe's text term), for editability: weight of a "
                                   "penalty keeping the text encoder's output for the words after the token as it is "
                                   "with --init-token in its place; 0: off")


class TextualInversion(Method):
    """New rows for the token in every text encoder of the pipeline (both of SDXL's)."""

    name = "textual-inversion"
    summary = "new token embeddings in the frozen text encoder(s)"
    options_class = TextualInversionOptions
    default_lr = 5e-3  # diffusers' textual_inversion example
    adds_token = True
    transformer_families = True
    # The demo's settings: on the concept set (8 concepts nobody tuned for, 2 seeds) they reached the targets in 14
    # of 16 runs, the most of any textual inversion setting measured; the usual defaults (1 vector, lr 5e-3, batch 1,
    # 500 steps) in 1 (benchmarks/results/concept_sweep.md: ti-average, ti-former-defaults; the miniworld shipped
    # until 2026-12-05). On the one shipped since, 19 of 26 runs of 13 concepts (concept_sweep_2a05c6767420493f.md).
    # Several vectors give the text encoder's output room to reach what it has no word for; the model and its vectors
    # are small, so the rate is high; at a constant rate the vectors wander, so the saved ones are their moving
    # average over about the last 100 steps.
    miniworld_defaults = {"vectors": 6, "lr": 0.1, "batch_size": 4, "ema_decay": 0.99, "steps": 800}
    # The shape's settings: lora-all-cosine in benchmarks/results/concept_sweep.md (the set's two stars at the targets
    # on both seeds by the judge of then, against 2 of 4 at a constant rate; by eye stars only where drawn big or on a
    # colour, and with --refine-latents both stars on both seeds by the judge, the blue one at twice the passes:
    # docs/subjects.md).
    # The stripes' settings: ti-average-noisiest in benchmarks/results/concept_sweep_2a05c6767420493f.md (the blue
    # striped square and the striped style on both seeds, against neither with the defaults; it loses checkers), and
    # `pick` between it and --steps 3200 in benchmarks/results/pick_by_likeness*.md (a run at the targets kept in 47
    # of 48 concept-seed pairs, 48 on another draw of its pictures; on striped subjects held out from that, 3 of 4,
    # pick_by_likeness_held_out_stripes*.md). Not for checks: the bias draws them striped, and on a held-out checkered
    # subject the pick kept its run (pick_by_likeness_held_out_checkered*.md).
    # Twice as long: ti-average at 6400 passes in concept_sweep_2a05c6767420493f.md (the teal heart on both seeds,
    # nothing the defaults learned lost: 20 of 24 runs against 19) and on two hidden colours held out from that choice
    # (concept_sweep_2a05c6767420493f_held_out_colours.md: 4 of 4 runs against 1).
    advice = ("a token can only ask for what the model already draws; if the previews show the subject in some pictures "
              "and not in others (a colour drawn as the nearest one the model has a word for), train twice as long "
              "first (--steps doubled); if they lose a striped pattern, train "
              "again with --timestep-bias later --timestep-bias-portion 0.1 --timestep-bias-multiplier 9 (miniworld chooses "
              "stripes at the noisiest steps) into another --output-dir, and keep the run that `textual-inversion pick` "
              "prints first; if they miss the subject, train the "
              "same pictures with --method pivotal (the token plus a LoRA) or lora, or for a shape the model never "
              "drew --method lora --lora-layers all --lr-scheduler cosine, for longer: they change the model itself; if "
              "the shape is small and the previews draw it as a dot or a smudge, add --refine-latents 300 (the VAE's "
              "encoder loses small shapes' corners, its decoder can draw them)")

    def __init__(self, config):
        super().__init__(config)
        self.rows: dict = {}  # file key (SINGLE_ENCODER, or clip_l/clip_g) -> that encoder's new rows
        self.encoders: list = []  # (text encoder, first placeholder id, that encoder's rows)
        self.initial_norms: list = []
        self.num_vectors = self.options.vectors  # with --init-embedding, the file's count (set by prepare)
        self.layout = None  # with --per-layer or --time-stages, how the token's sets of vectors are laid out
        self.set_rows = None  # with --per-layer or --time-stages, the sets' trainable rows (`SetRows`)
        self.tokenizers: list = []  # beside `encoders`, for --context-weight
        self.gradient_stops: list = []  # with --token-gradient up or finest, the hooks that detach the text elsewhere
        self.narrow_steps = math.ceil(self.options.token_gradient_fraction * config.steps)  # steps with those hooks

    @classmethod
    def validate(cls, config) -> None:
        options = config.options
        if options.time_stages < 1:
            raise UserError(f"--time-stages {options.time_stages}: must be at least 1 (1: one set for every stage)")
        if options.context_weight < 0:
            raise UserError(f"--context-weight {options.context_weight}: cannot be negative (0: off)")
        if options.shared_vectors and not (options.per_layer or options.time_stages > 1):
            raise UserError("--shared-vectors shares one set among several: add --time-stages N (N > 1) or --per-layer, "
                            "or leave it out")
        if options.shared_vectors and options.keep_norm:
            raise UserError("--keep-norm keeps each vector's length, which an offset has not: leave out --keep-norm or "
                            "--shared-vectors")
        if options.context_weight and (options.per_layer or options.time_stages > 1 or options.init_embedding):
            raise UserError(f"--context-weight {options.context_weight} compares the token with --init-token's word "
                            "in one text encoding; leave it out with --per-layer, --time-stages and --init-embedding")
        if not 0 < options.token_gradient_fraction <= 1:
            raise UserError(f"--token-gradient-fraction {options.token_gradient_fraction}: must be above 0 and at most 1")
        if options.token_gradient_fraction != 1 and options.token_gradient == "all":
            raise UserError(f"--token-gradient-fraction {options.token_gradient_fraction} applies to --token-gradient up "
                            "or finest; add one of them or leave it out")
        if options.token_gradient != "all" and options.per_layer:
            raise UserError(f"--token-gradient {options.token_gradient}: with --per-layer the other layers' own vectors "
                            "would never learn; leave one of them out")
        if options.init_embedding:
            read_init_embedding(options)  # checks the file and how it goes with the other options
            return
        if not options.init_token.strip():
            raise UserError("--init-token is required: a word close to your subject, e.g. cat "
                            "(or --init-embedding FILE to start from an embedding)")
        if options.vectors < 1:
            raise UserError(f"--vectors {options.vectors}: must be at least 1")
        if options.vectors > MAX_VECTORS:
            raise UserError(f"--vectors {options.vectors}: a prompt holds at most {MAX_VECTORS} tokens; use 1-16")

    def prepare(self, pipe, data) -> None:
        """Add the token to each tokenizer and wrap each text encoder's embedding with trainable rows."""
        from ..formats import SINGLE_ENCODER
        from ..models import check_fits, is_transformer_family
        from ..tokens import (
            add_placeholder_tokens,
            attach_placeholder_embedding,
            cross_initial_embeddings,
            initializer_embeddings,
        )

        options = self.options
        start = read_init_embedding(options) if options.init_embedding else None
        if start is not None:
            check_fits(start, pipe, f"--init-embedding {options.init_embedding}")
            self.num_vectors = start.num_vectors
        if options.context_weight and is_transformer_family(pipe):
            raise UserError(f"--context-weight {options.context_weight}: for the UNet families (CLIP text encoders); "
                            "leave it out")
        if options.token_gradient != "all":
            if is_transformer_family(pipe):
                raise UserError(f"--token-gradient {options.token_gradient}: for the UNet families (SD 1.x/2.x, SDXL, "
                                "miniworld); leave it out")
            self.gradient_stops = stop_token_gradient(pipe.unet, options.token_gradient)
        for name, tokenizer, encoder in learning_encoders(pipe, options.ti_encoders, start):
            if start is not None:
                initial = start.vectors[name]  # the file's keys are the encoders' names (text_encoder, clip_l, clip_g)
            elif options.init_strategy == "cross":
                initial = cross_initial_embeddings(tokenizer, encoder, options.init_token, options.vectors)
            else:
                initial = initializer_embeddings(tokenizer, encoder.get_input_embeddings(), options.init_token,
                                                 options.vectors)
            ids = add_placeholder_tokens(tokenizer, self.config.token, self.num_vectors)
            if self.extended:
                self.prepare_extended(pipe, ids[0], initial)
                return
            wrapper = attach_placeholder_embedding(encoder, ids[0], initial)
            self.rows[SINGLE_ENCODER if name == "text_encoder" else name] = wrapper.new_rows
            self.initial_norms.append(initial.norm(dim=-1, keepdim=True).to(wrapper.new_rows.device))
            self.encoders.append((encoder, ids[0], wrapper.new_rows))
            self.tokenizers.append(tokenizer)

    @property
    def extended(self) -> bool:
        """Whether the token has several sets of vectors (--per-layer, --time-stages > 1)."""
        return self.options.per_layer or self.options.time_stages > 1

    def prepare_extended(self, pipe, first_id: int, initial) -> None:
        """Every set of vectors (per layer and/or stage) starts from `initial` [n, D]."""
        from ..extended_conditioning import SetLayout, cross_attention_layers, install
        from ..formats import SINGLE_ENCODER
        from ..models import is_transformer_family, text_encoders

        flag = "--per-layer" if self.options.per_layer else f"--time-stages {self.options.time_stages}"
        if is_transformer_family(pipe) or len(text_encoders(pipe)) > 1:
            raise UserError(f"{flag}: for SD 1.x, 2.x and miniworld (one text encoder and a UNet); leave it out")
        self.layout = SetLayout(cross_attention_layers(pipe.unet) if self.options.per_layer else [],
                                self.options.time_stages)
        self.set_rows = install(pipe, first_id, initial.unsqueeze(0).repeat(self.layout.count, 1, 1), self.layout,
                                self.options.shared_vectors)
        self.rows[SINGLE_ENCODER] = self.set_rows.rows
        if self.set_rows.shared is not None:
            self.rows[SHARED] = self.set_rows.shared
        self.initial_norms.append(initial.norm(dim=-1, keepdim=True).to(self.set_rows.rows.device))

    def parameter_groups(self, lr: float) -> list[dict]:
        return [{"params": list(self.rows.values()), "lr": lr}]

    def step_started(self, step: int) -> None:
        """With --token-gradient-fraction, from its step on the token learns through every layer."""
        if self.gradient_stops and step >= self.narrow_steps:
            self.learn_through_every_layer()
            logger.info("from step %d the token learns through every cross-attention layer", step)

    def step_finished(self, step: int) -> None:
        """With --keep-norm, put every vector back to the length it started with."""
        if not self.options.keep_norm:
            return
        import torch

        with torch.no_grad():
            for rows, norms in zip(self.rows.values(), self.initial_norms, strict=True):
                rows.mul_(norms / rows.norm(dim=-1, keepdim=True).clamp(min=1e-12))

    def regularisation(self, prompts: list[str]):
        """With --context-weight, the context penalty summed over the text encoders that learn."""
        if not self.options.context_weight:
            return None
        from ..context_regularisation import context_penalty

        penalties = [context_penalty(tokenizer, encoder, prompts, self.config.token, self.options.init_token,
                                     set(range(first_id, first_id + self.num_vectors)))
                     for tokenizer, (encoder, first_id, _) in zip(self.tokenizers, self.encoders, strict=True)]
        penalties = [p for p in penalties if p is not None]
        return self.options.context_weight * sum(penalties) if penalties else None

    def state_dict(self) -> dict:
        return {name: rows.detach().clone() for name, rows in self.rows.items()}

    def load_state_dict(self, state: dict) -> None:
        import torch

        if set(state) != set(self.rows):
            raise UserError("--resume: the checkpoint was written with other options for the token's vectors than this "
                            "run's; resume with the options the run began with (its --per-layer, --time-stages, "
                            "--shared-vectors)")
        for name, rows in self.rows.items():
            if state[name].shape != rows.shape:
                # e.g. a run begun before miniworld's defaults changed, resumed without its --vectors
                raise UserError(f"--resume: the checkpoint holds {state[name].shape[0]} vector(s) for the token where "
                                f"this run makes {rows.shape[0]}; resume with the options the run began with (its "
                                "--vectors, --per-layer, --time-stages)")
        with torch.no_grad():
            for name, rows in self.rows.items():
                rows.copy_(state[name])

    def metadata(self) -> dict[str, str]:
        metadata = {"vectors": str(self.num_vectors), "init_token": self.options.init_token}
        if self.options.init_embedding:
            metadata["init_embedding"] = self.options.init_embedding
        return metadata

    def learned_vectors(self) -> dict:
        """File key -> the token's vectors as lookups use them: [n, D], or with --per-layer or --time-stages
        every set's [S, n, D] (with --shared-vectors the shared set added to each offset)."""
        from ..formats import SINGLE_ENCODER

        if self.extended:
            return {SINGLE_ENCODER: self.set_rows.sets().detach().clone()}
        return self.state_dict()

    def embedding(self, metadata: dict[str, str]):
        """The learned vectors as an `Embedding` (the token, a tensor per text encoder, `metadata`); with
        --per-layer or --time-stages the mean of its sets, which any tool loads as an ordinary token."""
        from ..formats import Embedding

        vectors = {key: rows.mean(0) if self.extended else rows for key, rows in self.learned_vectors().items()}
        return Embedding(self.config.token, vectors, dict(metadata))

    def save(self, folder: Path, metadata: dict[str, str]) -> dict[str, Path]:
        """Write the learned vectors as a diffusers-loadable `learned_embeds.safetensors`; with --per-layer or
        --time-stages also every set of vectors in `learned_embeds_extended.safetensors`."""
        from ..formats import write_embedding

        written = {EMBEDDING: write_embedding(self.embedding(metadata), Path(folder) / OUTPUT_FILES[EMBEDDING],
                                              "diffusers")}
        if self.extended:
            from ..extended_conditioning import write_extended

            written[EXTENDED] = write_extended(self.config.token, self.layout, self.learned_vectors()["text_encoder"],
                                               Path(folder) / OUTPUT_FILES[EXTENDED], metadata)
        return written

    def release(self) -> None:
        """Give the text encoders plain embedding modules back, the learned rows written into them.

        This is what diffusers' `load_textual_inversion` does, so the pipeline can go on generating
        with the new token; the pretrained rows are untouched.
        """
        from ..tokens import detach_placeholder_embedding, write_token_rows

        for encoder, first_id, rows in self.encoders:
            detach_placeholder_embedding(encoder)
            write_token_rows(encoder, first_id, rows.detach())
        self.learn_through_every_layer()
        self.encoders, self.tokenizers = [], []

    def learn_through_every_layer(self) -> None:
        """Take --token-gradient's hooks off the UNet: the gradient reaches the token through every layer again."""
        for hook in self.gradient_stops:
            hook.remove()
        self.gradient_stops = []


def learning_encoders(pipe, choice: str, start=None) -> list[tuple[str, object, object]]:
    """The (key, tokenizer, encoder) entries that learn the token: those named in --ti-encoders (transformer
    families only: A1111 and ComfyUI load an SD file only with every encoder's vectors), those of an
    --init-embedding file, or all."""
    from ..models import is_transformer_family, text_encoders

    encoders = text_encoders(pipe)
    keys = [key for key, _, _ in encoders]
    if start is not None:
        return [entry for entry in encoders if entry[0] in start.vectors]
    if not choice.strip():
        return encoders
    if not is_transformer_family(pipe):
        raise UserError(f"--ti-encoders {choice}: on this model every text encoder learns the token; leave it out")
    chosen = [name.strip() for name in choice.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in keys]
    if unknown or not chosen:
        raise UserError(f"--ti-encoders {choice}: this model's text encoders are {', '.join(keys)}")
    return [entry for entry in encoders if entry[0] in chosen]


def read_init_embedding(options: TextualInversionOptions):
    """The --init-embedding file as an `Embedding`, checked against --init-token, --init-strategy and --vectors.

    The token gets exactly the file's vectors: --vectors may stay at its default (1) or name the file's count.
    """
    from ..formats import read_embedding

    path = options.init_embedding
    if options.init_token.strip():
        raise UserError(f"--init-embedding {path} and --init-token {options.init_token!r} both say where the vectors "
                        "start; give one of them")
    if options.init_strategy != "word":
        raise UserError(f"--init-strategy {options.init_strategy} starts from --init-token's word; leave it out with "
                        "--init-embedding")
    try:
        embedding = read_embedding(path)
    except UserError as error:
        raise UserError(f"--init-embedding {error}") from None
    count = embedding.num_vectors
    if options.vectors not in (1, count):
        raise UserError(f"--vectors {options.vectors}: --init-embedding {path} holds {count} vector(s), which the "
                        "token takes; leave --vectors out, or cut the file first (merge --first N)")
    if count > MAX_VECTORS:
        raise UserError(f"--init-embedding {path}: holds {count} vectors, but a prompt holds at most {MAX_VECTORS} "
                        "tokens; cut it first (merge --first N)")
    return embedding


def stop_token_gradient(unet, layers: str) -> list:
    """Detach the text conditioning where the cross-attention layers `layers` ("up": the UNet's up blocks'; "finest":
    those of the last up block that has any, the highest resolution) do not reach: the loss's gradient comes back to
    the token through those only, and the backward pass ends where they begin instead of at the first down block.
    The forward pass is unchanged. Returns the hooks (remove them to undo)."""
    from ..extended_conditioning import cross_attention_layers

    layer_names = cross_attention_layers(unet)
    up_blocks = sorted({name.split(".")[1] for name in layer_names if name.startswith("up_blocks.")}, key=int)
    if not up_blocks:
        raise UserError(f"--token-gradient {layers}: this UNet has no cross-attention in its up blocks; leave it out")
    keep = "up_blocks." if layers == "up" else f"up_blocks.{up_blocks[-1]}."
    hooks = []
    for name in layer_names:
        if not name.startswith(keep):
            hooks.append(unet.get_submodule(name).register_forward_pre_hook(detach_text, with_kwargs=True))
    return hooks


def detach_text(module, args, kwargs):
    """A cross-attention layer's pre-hook: its `encoder_hidden_states` detached from the graph."""
    text = kwargs.get("encoder_hidden_states")
    if text is None:
        return None
    return args, {**kwargs, "encoder_hidden_states": text.detach()}
