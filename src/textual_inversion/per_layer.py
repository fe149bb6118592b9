"""Extended textual conditioning (P+, Voynov et al. 2023): a learned token with its own vectors for each of the
UNet's cross-attention layers.

The text encoder runs once per cross-attention layer, each time with that layer's vectors in the token's rows,
and the outputs are laid side by side along the sequence: [B, 77 x L, D]. Each cross-attention layer's
processor then reads its own 77 positions. The pipelines' `encode_prompt`, classifier-free guidance and the
training loop see an ordinary conditioning tensor, so nothing else changes for them. For the UNet families
with one text encoder (SD 1.x, 2.x, miniworld).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .atomic import atomic_path
from .errors import UserError


def cross_attention_layers(unet) -> list[str]:
    """The UNet's cross-attention layers (`...attn2`), in the order of its processors: one vector set each."""
    return [name.removesuffix(".processor") for name in unet.attn_processors if name.endswith("attn2.processor")]


class LayeredRows(nn.Module):
    """The text encoder's frozen token embedding plus trainable rows [L, n, D] for the ids from `first_new_id` on;
    `layer` says which of the L sets a lookup uses."""

    def __init__(self, base: nn.Embedding, first_new_id: int, rows: torch.Tensor):
        super().__init__()
        self.base, self.first_new_id, self.layer = base, first_new_id, 0
        self.rows = nn.Parameter(rows.detach().clone().float())

    @property
    def weight(self) -> torch.Tensor:  # callers read it for the dtype, device or width: the frozen matrix answers
        return self.base.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        is_new = input_ids >= self.first_new_id
        known = self.base(input_ids.clamp(max=self.first_new_id - 1))
        new_index = (input_ids - self.first_new_id).clamp(min=0, max=self.rows.shape[1] - 1)
        new = self.rows[self.layer].to(known.dtype)[new_index]
        return torch.where(is_new.unsqueeze(-1), new, known)


class LayeredTextEncoder(nn.Module):
    """A text encoder run once per set of `rows`; its outputs (each hidden state) concatenated along the sequence.
    Other attributes (config, dtype, text_model ...) are the wrapped encoder's, as the pipelines read them."""

    def __init__(self, encoder: nn.Module, rows: LayeredRows):
        super().__init__()
        self.encoder, self.layered_rows = encoder, rows

    def forward(self, input_ids, attention_mask=None, output_hidden_states: bool = False, **kwargs):
        # SD's encode_prompt pads the negative prompt to the length of the (layered) prompt embeddings, L x 77;
        # its first 77 ids are what an ordinary 77-token encoding of it holds.
        limit = self.encoder.config.max_position_embeddings
        input_ids = input_ids[:, :limit]
        attention_mask = attention_mask[:, :limit] if attention_mask is not None else None
        outputs = []
        for layer in range(self.layered_rows.rows.shape[0]):
            self.layered_rows.layer = layer
            outputs.append(self.encoder(input_ids, attention_mask=attention_mask,
                                        output_hidden_states=output_hidden_states, **kwargs))
        self.layered_rows.layer = 0
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


class LayerSlice:
    """An attention processor giving cross-attention layer `index` of `count` its part of a layered conditioning."""

    def __init__(self, inner, index: int, count: int):
        self.inner, self.index, self.count = inner, index, count

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        if encoder_hidden_states is not None:
            length = encoder_hidden_states.shape[1] // self.count
            encoder_hidden_states = encoder_hidden_states[:, self.index * length:(self.index + 1) * length]
        return self.inner(attn, hidden_states, encoder_hidden_states, *args, **kwargs)


def install(pipe, first_new_id: int, rows: torch.Tensor) -> LayeredRows:
    """Make `pipe` condition each cross-attention layer on its own set of the token's vectors `rows` [L, n, D]."""
    layers = cross_attention_layers(pipe.unet)
    if isinstance(pipe.text_encoder, LayeredTextEncoder):
        raise UserError("a per-layer concept is loaded already; load one per-layer concept at a time")
    if rows.shape[0] != len(layers):
        raise UserError(f"the per-layer vectors are for {rows.shape[0]} cross-attention layers, but this UNet has "
                        f"{len(layers)}; use a concept trained on this model")
    encoder = pipe.text_encoder
    layered = LayeredRows(encoder.get_input_embeddings(), first_new_id, rows.to(encoder.device))
    encoder.set_input_embeddings(layered)
    pipe.text_encoder = LayeredTextEncoder(encoder, layered)
    processors = pipe.unet.attn_processors
    pipe.unet.set_attn_processor({
        name: LayerSlice(processor, layers.index(name.removesuffix(".processor")), len(layers))
        if name.removesuffix(".processor") in layers else processor for name, processor in processors.items()})
    return layered


def write_per_layer(token: str, layers: list[str], rows: torch.Tensor, path: Path, metadata: dict[str, str]) -> Path:
    """The file: one key per cross-attention layer (its name in the UNet) -> that layer's vectors [n, D]."""
    from safetensors.torch import save_file

    tensors = {layer: rows[index].detach().float().contiguous().cpu() for index, layer in enumerate(layers)}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata={**{k: str(v) for k, v in metadata.items()}, "token": token})
    return path


def is_per_layer_file(path: Path) -> bool:
    """A .safetensors file whose keys are cross-attention layers (`...attn2`): a per-layer token's."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except (SafetensorError, OSError):
        return False
    return bool(keys) and all(key.endswith(".attn2") for key in keys)


def load_per_layer(pipe, path: Path) -> str:
    """Add the token of a per-layer file to `pipe` (its tokenizer, and the layered conditioning); returns it."""
    from safetensors import SafetensorError, safe_open

    from .tokens import add_placeholder_tokens

    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            token = (handle.metadata() or {}).get("token")
    except (SafetensorError, OSError) as error:
        raise UserError(f"{path}: not a readable .safetensors file ({error})") from None
    layers = cross_attention_layers(pipe.unet) if hasattr(pipe, "unet") else []
    if not token or sorted(tensors) != sorted(layers):
        raise UserError(f"{path}: per-layer vectors for other cross-attention layers than this model's UNet has; "
                        "use a concept trained on this model")
    width = pipe.text_encoder.get_input_embeddings().weight.shape[-1]
    rows = torch.stack([tensors[layer].float() for layer in layers])
    if rows.shape[-1] != width:
        raise UserError(f"{path}: vectors {rows.shape[-1]} wide, but this model's text encoder is {width} wide; use a "
                        "concept trained on this model")
    if token in pipe.tokenizer.get_vocab():
        raise UserError(f"{path}: token {token} is already in the vocabulary (loaded twice, or a real word)")
    ids = add_placeholder_tokens(pipe.tokenizer, token, rows.shape[1])
    install(pipe, ids[0], rows)
    return token
