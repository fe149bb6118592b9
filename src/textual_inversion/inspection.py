"""What a learned vector is close to: the vocabulary words whose input embeddings point the same way.

As AUTOMATIC1111's embedding-inspector extension shows it: the cosine similarity of each vector to every
row of the text encoder's input embedding matrix, best first. Special and added tokens are left out:
they are not words a prompt can use.
"""

from __future__ import annotations

import torch

from .formats import SINGLE_ENCODER, Embedding
from .models import text_encoders

WORD_END = "</w>"  # CLIP's BPE vocabulary marks the last piece of a word so; other pieces continue a word


def nearest_words(embedding: Embedding, pipe, top_k: int = 5) -> dict[str, list[list[tuple[str, float]]]]:
    """{text encoder: for each vector, the `top_k` (word, cosine similarity) of its vocabulary, best first}.

    The caller checks first that `embedding` fits `pipe` (models.check_fits)."""
    nearest = {}
    for name, tokenizer, encoder in text_encoders(pipe):
        key = SINGLE_ENCODER if name == "text_encoder" else name
        matrix = encoder.get_input_embeddings().weight.detach().float().cpu()
        vectors = embedding.vectors[key].float()
        similarity = torch.nn.functional.normalize(vectors, dim=-1) @ torch.nn.functional.normalize(matrix, dim=-1).T
        not_words = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
        not_words = [index for index in not_words if index < matrix.shape[0]]
        similarity[:, not_words] = -float("inf")
        scores, ids = similarity.topk(min(top_k, matrix.shape[0] - len(not_words)), dim=-1)
        nearest[key] = [[(readable(tokenizer.convert_ids_to_tokens(int(token_id))), float(score))
                         for score, token_id in zip(row_scores, row_ids, strict=True)]
                        for row_scores, row_ids in zip(scores, ids, strict=True)]
    return nearest


def readable(token: str) -> str:
    """A vocabulary entry as a reader knows it: 'cat</w>' is the word cat; 'cat' alone begins a longer word."""
    return token.removesuffix(WORD_END) if token.endswith(WORD_END) else f"{token}…"


def format_nearest(nearest: dict[str, list[list[tuple[str, float]]]]) -> str:
    """One line per vector: its nearest words with their similarity."""
    lines = []
    for encoder, rows in nearest.items():
        lines.append(f"nearest words ({encoder}, cosine similarity):")
        for index, row in enumerate(rows):
            lines.append(f"  vector {index}: " + ", ".join(f"{word} {score:.3f}" for word, score in row))
    return "\n".join(lines)
