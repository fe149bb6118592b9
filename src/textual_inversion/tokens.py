"""Placeholder tokens: add them to a tokenizer and let only their embedding rows learn.

The text encoder's own embedding matrix is never modified during training. Instead its token
embedding module is wrapped by `PlaceholderEmbedding`, which looks up the frozen matrix for known
ids and a small trainable tensor for the new ids. So the optimizer sees only the new rows, no
full-matrix gradient is ever built, and every pretrained weight stays bit-identical.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .errors import UserError

logger = logging.getLogger(__name__)


def placeholder_token_names(token: str, num_vectors: int) -> list[str]:
    """The tokenizer entries for a (multi-vector) token, in diffusers' convention: `<t>`, `<t>_1`, ..."""
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


def spell_out_vectors(prompt: str, tokenizer) -> str:
    """`prompt` with each multi-vector token `<t>` that `tokenizer` knows written as `<t> <t>_1 ... <t>_n-1`.

    What diffusers' TextualInversionLoaderMixin does for the pipelines that have it (SD, SDXL, Flux); SD3 and
    Z-Image have none, so their prompts are spelled out here before the pipeline reads them.
    """
    vocab = tokenizer.get_vocab()
    words = []
    for word in prompt.split(" "):
        count = 1
        while word in vocab and f"{word}_{count}" in vocab:
            count += 1
        words.append(" ".join(placeholder_token_names(word, count)) if count > 1 else word)
    return " ".join(words)


def add_placeholder_tokens(tokenizer, token: str, num_vectors: int) -> list[int]:
    """Add `token` (and its extra vectors) to `tokenizer`; return their ids, which are contiguous."""
    names = placeholder_token_names(token, num_vectors)
    vocab = tokenizer.get_vocab()
    # CLIP's vocabulary spells whole words with a "</w>" suffix: "cat" is there as "cat</w>".
    taken = [name for name in names if name in vocab or f"{name.lower()}</w>" in vocab]
    if taken:
        raise UserError(
            f"--token {token!r}: {taken[0]!r} is already in the model's vocabulary; "
            "pick a new word, e.g. wrapped in angle brackets like <my-cat>"
        )
    added = tokenizer.add_tokens(names)
    if added != len(names):
        raise UserError(f"--token {token!r}: the tokenizer would not add it as a single new token; pick another word")
    ids = tokenizer.convert_tokens_to_ids(names)
    if ids != list(range(ids[0], ids[0] + len(ids))):
        raise RuntimeError(f"placeholder ids are not contiguous: {ids}")
    return ids


def initializer_embeddings(tokenizer, embedding: nn.Embedding, init_text: str, num_vectors: int) -> torch.Tensor:
    """Starting vectors from the words in `init_text` ([num_vectors, dim], float32).

    Rule: if the text splits into exactly `num_vectors` tokens, vector i starts from token i;
    otherwise every vector starts from the mean of all its tokens. Nothing is silently dropped.
    """
    init_ids = tokenizer.encode(init_text, add_special_tokens=False)
    if not init_text.strip() or not init_ids:
        raise UserError("--init-token is empty; give a word close to your subject, e.g. --init-token cat")
    weight = embedding.weight.detach().float()
    if any(i >= weight.shape[0] for i in init_ids):
        raise UserError(f"--init-token {init_text!r} uses tokens the text encoder has no embedding for")
    vectors = weight[init_ids]
    if len(init_ids) == num_vectors:
        return vectors.clone()
    if len(init_ids) > 1:
        logger.info("--init-token %r is %d tokens; each of the %d vectors starts from their mean",
                    init_text, len(init_ids), num_vectors)
    return vectors.mean(dim=0, keepdim=True).repeat(num_vectors, 1)


@torch.no_grad()
def cross_initial_embeddings(tokenizer, text_encoder, init_text: str, num_vectors: int) -> torch.Tensor:
    """Cross-Initialization (Pang et al. 2023): start from the text encoder's *output* for the words.

    The output features of the initializer tokens (final hidden state) lie where the learned
    embeddings tend to end up, so fewer steps are needed. Same spreading rule as `initializer_embeddings`.
    """
    init_ids = tokenizer.encode(init_text, add_special_tokens=False)
    if not init_text.strip() or not init_ids:
        raise UserError("--init-token is empty; give a word close to your subject, e.g. --init-token cat")
    # The words framed as the tokenizer frames a prompt: CLIP adds start and end tokens, T5 an end, Qwen nothing.
    framed = tokenizer(init_text).input_ids
    start = next(i for i in range(len(framed)) if framed[i:i + len(init_ids)] == init_ids)
    ids = torch.tensor([framed], device=text_encoder.device)
    outputs = text_encoder(ids).last_hidden_state[0, start:start + len(init_ids)].float()
    if len(init_ids) == num_vectors:
        return outputs.clone()
    return outputs.mean(dim=0, keepdim=True).repeat(num_vectors, 1)


def lookup_with_new_rows(base: nn.Embedding, first_new_id: int, new_rows: torch.Tensor,
                         input_ids: torch.Tensor) -> torch.Tensor:
    """Embeddings [..., D] of `input_ids`: from the frozen `base` matrix below `first_new_id`, from `new_rows`
    [n, D] (which may learn) from there on."""
    is_new = input_ids >= first_new_id
    known = base(input_ids.clamp(max=first_new_id - 1))
    new_index = (input_ids - first_new_id).clamp(min=0, max=new_rows.shape[0] - 1)
    return torch.where(is_new.unsqueeze(-1), new_rows.to(known.dtype)[new_index], known)


class PlaceholderEmbedding(nn.Module):
    """A frozen token embedding plus trainable rows for the ids from `first_new_id` on."""

    def __init__(self, base: nn.Embedding, first_new_id: int, initial_rows: torch.Tensor):
        super().__init__()
        self.base = base
        self.first_new_id = first_new_id
        self.new_rows = nn.Parameter(initial_rows.detach().clone().float())

    @property
    def weight(self) -> torch.Tensor:
        # Some callers read `.weight` for the dtype/device or the dimension; the frozen matrix answers.
        return self.base.weight

    @property
    def embedding_dim(self) -> int:
        return self.base.embedding_dim

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return lookup_with_new_rows(self.base, self.first_new_id, self.new_rows, input_ids)


def attach_placeholder_embedding(text_encoder, first_new_id: int, initial_rows: torch.Tensor) -> PlaceholderEmbedding:
    """Wrap `text_encoder`'s token embedding so rows from `first_new_id` on come from `initial_rows`."""
    base = text_encoder.get_input_embeddings()
    if isinstance(base, PlaceholderEmbedding):
        raise RuntimeError("text encoder already has placeholder rows attached")
    wrapper = PlaceholderEmbedding(base, first_new_id, initial_rows.to(base.weight.device))
    text_encoder.set_input_embeddings(wrapper)
    return wrapper


@torch.no_grad()
def write_token_rows(text_encoder, first_id: int, rows: torch.Tensor) -> None:
    """Put `rows` [n, dim] into `text_encoder`'s embedding matrix at ids first_id.. (growing it if they are past
    its end; a matrix with spare rows past the tokenizer's vocabulary, as T5's and Qwen's have, keeps its size)."""
    needed = first_id + rows.shape[0]
    if text_encoder.get_input_embeddings().weight.shape[0] < needed:
        text_encoder.resize_token_embeddings(needed, mean_resizing=False)  # the new rows are set below
    weight = text_encoder.get_input_embeddings().weight
    weight[first_id:needed] = rows.to(weight.device, weight.dtype)


def add_token(tokenizer, text_encoder, token: str, vectors: torch.Tensor) -> None:
    """Add a learned (multi-vector) `token` with `vectors` [n, dim] to a tokenizer and its text encoder, as
    diffusers' `load_textual_inversion` does for the pipelines that have it."""
    ids = add_placeholder_tokens(tokenizer, token, vectors.shape[0])
    write_token_rows(text_encoder, ids[0], vectors)


def detach_placeholder_embedding(text_encoder) -> None:
    """Put the original embedding module back (the placeholder rows are dropped)."""
    current = text_encoder.get_input_embeddings()
    if isinstance(current, PlaceholderEmbedding):
        text_encoder.set_input_embeddings(current.base)
