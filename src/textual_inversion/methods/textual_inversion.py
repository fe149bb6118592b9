"""Textual Inversion (Gal et al. 2022): only new token embeddings learn; the model stays frozen."""

from __future__ import annotations

from pathlib import Path

import torch

from ..formats import SINGLE_ENCODER, Embedding, write_embedding
from ..models import text_encoders
from ..tokens import (
    add_placeholder_tokens,
    attach_placeholder_embedding,
    cross_initial_embeddings,
    detach_placeholder_embedding,
    initializer_embeddings,
)

EMBEDDING_FILE = "learned_embeds.safetensors"


class TextualInversion:
    """New rows for `config.token` in every text encoder of the pipeline (both of SDXL's)."""

    name = "textual-inversion"

    def __init__(self, config):
        self.config = config
        self.rows: dict[str, torch.nn.Parameter] = {}
        self.encoders: list = []  # (text encoder, first placeholder id, that encoder's rows)
        self.initial_norms: list[torch.Tensor] = []

    def prepare(self, pipe) -> None:
        """Add the token to each tokenizer and wrap each text encoder's embedding with trainable rows."""
        for name, tokenizer, encoder in text_encoders(pipe):
            base = encoder.get_input_embeddings()
            if self.config.init_strategy == "cross":
                initial = cross_initial_embeddings(tokenizer, encoder, self.config.init_token, self.config.vectors)
            else:
                initial = initializer_embeddings(tokenizer, base, self.config.init_token, self.config.vectors)
            ids = add_placeholder_tokens(tokenizer, self.config.token, self.config.vectors)
            wrapper = attach_placeholder_embedding(encoder, ids[0], initial)
            self.rows[SINGLE_ENCODER if name == "text_encoder" else name] = wrapper.new_rows
            self.initial_norms.append(initial.norm(dim=-1, keepdim=True).to(wrapper.new_rows.device))
            self.encoders.append((encoder, ids[0], wrapper.new_rows))

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.rows.values())

    def parameter_groups(self, lr: float) -> list[dict]:
        return [{"params": self.trainable_parameters(), "lr": lr}]

    def step_finished(self) -> None:
        """With --keep-norm, put every vector back to the length it started with."""
        if not self.config.keep_norm:
            return
        with torch.no_grad():
            for rows, norms in zip(self.rows.values(), self.initial_norms, strict=True):
                rows.mul_(norms / rows.norm(dim=-1, keepdim=True).clamp(min=1e-12))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: rows.detach().clone() for name, rows in self.rows.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, rows in self.rows.items():
                rows.copy_(state[name])

    def embedding(self, metadata: dict[str, str]) -> Embedding:
        return Embedding(self.config.token, self.state_dict(), dict(metadata))

    def save(self, output_dir: Path, metadata: dict[str, str]) -> list[Path]:
        """Write the learned vectors as a diffusers-loadable `learned_embeds.safetensors`."""
        return [write_embedding(self.embedding(metadata), Path(output_dir) / EMBEDDING_FILE, "diffusers")]

    def release(self) -> None:
        """Give the text encoders plain embedding modules back, the learned rows written into them.

        This is what diffusers' `load_textual_inversion` does, so the pipeline can go on generating
        with the new token; the pretrained rows are untouched.
        """
        for encoder, first_id, rows in self.encoders:
            detach_placeholder_embedding(encoder)
            encoder.resize_token_embeddings(first_id + rows.shape[0], mean_resizing=False)  # rows set below
            with torch.no_grad():
                weight = encoder.get_input_embeddings().weight
                weight[first_id:first_id + rows.shape[0]] = rows.to(weight.dtype)
        self.encoders = []
