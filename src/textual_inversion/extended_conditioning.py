"""A learned token with more than one set of vectors: one per UNet cross-attention layer (P+, "extended textual
conditioning", Voynov et al. 2023), one per denoising stage (the idea of NeTI, Alaluf et al. 2023, and ProSpect:
early, noisy steps lay out shape and colour, late ones draw detail), or one per layer and stage.

The text encoder runs once per set, each time with that set's vectors in the token's rows, and the outputs are
laid side by side along the sequence: [B, 77 x S, D]. Each cross-attention layer's processor then reads the
77 positions of its set: its layer's, and with stages the one for each sample's timestep, which a hook on the
UNet's forward notes. The pipelines' `encode_prompt`, classifier-free guidance and the training loop see an
ordinary conditioning tensor, so nothing else changes for them. For the UNet families with one text encoder
(SD 1.x, 2.x, miniworld).

File (`learned_embeds_extended.safetensors`): one key per set, `<layer>` (per layer), `stage.<s>` (per stage) or
`<layer>.stage.<s>` (both), each [n, D]; the metadata holds the token and the number of stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .atomic import atomic_path
from .errors import UserError
from .formats import read_safetensors, tensor_names
from .tokens import lookup_with_new_rows


def cross_attention_layers(unet) -> list[str]:
    """The UNet's cross-attention layers (`...attn2`), in the order of its processors."""
    return [name.removesuffix(".processor") for name in unet.attn_processors if name.endswith("attn2.processor")]


@dataclass
class SetLayout:
    """How the S = len(layers) x stages sets are laid out: set index = layer x stages + stage. `layers` is the
    UNet's cross-attention layers with per-layer sets, else empty (one set shared by every layer)."""

    layers: list[str] = field(default_factory=list)
    stages: int = 1

    @property
    def count(self) -> int:
        return max(1, len(self.layers)) * self.stages

    def keys(self) -> list[str]:
        """The file's key of each set, in set order."""
        if not self.layers:
            return [f"stage.{s}" for s in range(self.stages)]
        if self.stages == 1:
            return list(self.layers)
        return [f"{layer}.stage.{s}" for layer in self.layers for s in range(self.stages)]


class SetRows(nn.Module):
    """The text encoder's frozen token embedding plus trainable rows [S, n, D] for the ids from `first_new_id` on;
    `active` says which set a lookup uses. With `shared`, set s is `shared` [n, D] plus `rows[s]`, its offset: the
    shared vectors learn from every sample, whatever its set, and each offset only from its own."""

    def __init__(self, base: nn.Embedding, first_new_id: int, rows: torch.Tensor, shared: bool = False):
        super().__init__()
        self.base, self.first_new_id, self.active = base, first_new_id, 0
        if shared:  # the sets start where `rows` says: the shared part at their mean, each offset at the rest
            mean = rows.detach().float().mean(0)
            self.shared = nn.Parameter(mean.clone())
            self.rows = nn.Parameter(rows.detach().float() - mean)
        else:
            self.shared = None
            self.rows = nn.Parameter(rows.detach().clone().float())

    def sets(self) -> torch.Tensor:
        """Every set's vectors [S, n, D] as a lookup uses them."""
        return self.rows if self.shared is None else self.rows + self.shared

    @property
    def weight(self) -> torch.Tensor:  # callers read it for the dtype, device or width: the frozen matrix answers
        return self.base.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = self.rows[self.active] if self.shared is None else self.rows[self.active] + self.shared
        return lookup_with_new_rows(self.base, self.first_new_id, rows, input_ids)


class SetTextEncoder(nn.Module):
    """A text encoder run once per set of `rows`; its outputs (each hidden state) concatenated along the sequence.
    Other attributes (config, dtype, text_model ...) are the wrapped encoder's, as the pipelines read them."""

    def __init__(self, encoder: nn.Module, rows: SetRows):
        super().__init__()
        self.encoder, self.set_rows = encoder, rows

    def forward(self, input_ids, attention_mask=None, output_hidden_states: bool = False, **kwargs):
        # SD's encode_prompt pads the negative prompt to the length of the (extended) prompt embeddings, S x 77;
        # its first 77 ids are what an ordinary 77-token encoding of it holds.
        limit = self.encoder.config.max_position_embeddings
        input_ids = input_ids[:, :limit]
        attention_mask = attention_mask[:, :limit] if attention_mask is not None else None
        outputs = []
        for index in range(self.set_rows.rows.shape[0]):
            self.set_rows.active = index
            outputs.append(self.encoder(input_ids, attention_mask=attention_mask,
                                        output_hidden_states=output_hidden_states, **kwargs))
        self.set_rows.active = 0
        hidden = None
        if output_hidden_states:
            hidden = tuple(torch.cat(states, dim=1) for states in zip(*(o.hidden_states for o in outputs), strict=True))
        return BaseModelOutputWithPooling(last_hidden_state=torch.cat([o[0] for o in outputs], dim=1),
                                          pooler_output=outputs[0][1], hidden_states=hidden)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.encoder, name)


class StageClock:
    """Each sample's denoising stage (0: the noisiest timesteps) for the UNet call under way, noted by a forward
    pre-hook on the UNet: `stages` equal ranges of its `num_train_timesteps`."""

    def __init__(self, stages: int, num_train_timesteps: int):
        self.stages, self.num_train_timesteps = stages, num_train_timesteps
        self.stage = torch.zeros(1, dtype=torch.long)

    def __call__(self, module, args, kwargs) -> None:
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        timestep = torch.as_tensor(timestep).reshape(-1).float()
        late = (timestep * self.stages / self.num_train_timesteps).long().clamp(0, self.stages - 1)
        self.stage = (self.stages - 1 - late).cpu()  # high timestep = early stage


class SetSlice:
    """An attention processor giving cross-attention layer `layer` its set of an extended conditioning."""

    def __init__(self, inner, layer: int, layout: SetLayout, clock: StageClock | None):
        self.inner, self.layer, self.layout, self.clock = inner, layer, layout, clock

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        if encoder_hidden_states is not None:
            batch, total, width = encoder_hidden_states.shape
            sets = encoder_hidden_states.view(batch, self.layout.count, total // self.layout.count, width)
            first = self.layer * self.layout.stages
            if self.clock is None:
                encoder_hidden_states = sets[:, first]
            else:
                stage = self.clock.stage.to(sets.device).expand(batch) if self.clock.stage.numel() == 1 else \
                    self.clock.stage.to(sets.device)
                encoder_hidden_states = sets[torch.arange(batch, device=sets.device), first + stage]
        return self.inner(attn, hidden_states, encoder_hidden_states, *args, **kwargs)


def install(pipe, first_new_id: int, rows: torch.Tensor, layout: SetLayout, shared: bool = False) -> SetRows:
    """Make `pipe` condition its cross-attention on the token's sets of vectors `rows` [S, n, D] laid out as `layout`
    (with `shared`, learned as a shared set plus an offset per set: `SetRows`)."""
    if isinstance(pipe.text_encoder, SetTextEncoder):
        raise UserError("a per-layer or per-stage concept is loaded already; load one such concept at a time")
    if rows.shape[0] != layout.count:
        raise UserError(f"{rows.shape[0]} sets of vectors, but this model needs {layout.count}; use a concept "
                        "trained on this model")
    encoder = pipe.text_encoder
    set_rows = SetRows(encoder.get_input_embeddings(), first_new_id, rows.to(encoder.device), shared)
    encoder.set_input_embeddings(set_rows)
    pipe.text_encoder = SetTextEncoder(encoder, set_rows)
    clock = None
    if layout.stages > 1:
        clock = StageClock(layout.stages, pipe.scheduler.config.num_train_timesteps)
        pipe.unet.register_forward_pre_hook(clock, with_kwargs=True)
    layers = cross_attention_layers(pipe.unet)
    processors = {}
    for name, processor in pipe.unet.attn_processors.items():
        layer = name.removesuffix(".processor")
        if layer in layers:
            processor = SetSlice(processor, layout.layers.index(layer) if layout.layers else 0, layout, clock)
        processors[name] = processor
    pipe.unet.set_attn_processor(processors)
    return set_rows


def write_extended(token: str, layout: SetLayout, rows: torch.Tensor, path: Path, metadata: dict[str, str]) -> Path:
    """The file: one key per set (`SetLayout.keys`) -> that set's vectors [n, D]."""
    from safetensors.torch import save_file

    tensors = {key: rows[index].detach().float().contiguous().cpu() for index, key in enumerate(layout.keys())}
    stored = {**{k: str(v) for k, v in metadata.items()}, "token": token, "stages": str(layout.stages),
              "per_layer": str(bool(layout.layers))}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=stored)
    return path


def is_extended_file(path: Path) -> bool:
    """A .safetensors file whose keys are cross-attention layers or stages: an extended token's."""
    keys = tensor_names(path)
    return bool(keys) and all(key.endswith(".attn2") or ".stage." in key or key.startswith("stage.") for key in keys)


def load_extended(pipe, path: Path) -> str:
    """Add the token of an extended file to `pipe` (its tokenizer, and the extended conditioning); returns it."""
    from .tokens import add_placeholder_tokens

    tensors, metadata = read_safetensors(Path(path))
    token, stages = metadata.get("token"), int(metadata.get("stages") or 1)
    layers = cross_attention_layers(pipe.unet) if hasattr(pipe, "unet") else []
    layout = SetLayout(layers if metadata.get("per_layer", "True") == "True" else [], stages)
    if not token or sorted(tensors) != sorted(layout.keys()):
        raise UserError(f"{path}: vectors for other cross-attention layers than this model's UNet has; use a concept "
                        "trained on this model")
    width = pipe.text_encoder.get_input_embeddings().weight.shape[-1]
    rows = torch.stack([tensors[key].float() for key in layout.keys()])
    if rows.shape[-1] != width:
        raise UserError(f"{path}: vectors {rows.shape[-1]} wide, but this model's text encoder is {width} wide; use a "
                        "concept trained on this model")
    if token in pipe.tokenizer.get_vocab():
        raise UserError(f"{path}: token {token} is already in the vocabulary (loaded twice, or a real word)")
    ids = add_placeholder_tokens(pipe.tokenizer, token, rows.shape[1])
    install(pipe, ids[0], rows, layout)
    return token
