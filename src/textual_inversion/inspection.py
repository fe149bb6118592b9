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
WORD_STARTS = ("▁", "Ġ")  # T5's SentencePiece and Qwen's byte-level BPE mark a piece that follows a space so


def nearest_words(embedding: Embedding, pipe, top_k: int = 5) -> dict[str, list[list[tuple[str, float]]]]:
    """{text encoder: for each vector, the `top_k` (word, cosine similarity) of its vocabulary, best first}, for
    each encoder the file has vectors for (a file trained with --ti-encoders holds some of them).

    The caller checks first that `embedding` fits `pipe` (models.check_fits)."""
    nearest = {}
    for name, tokenizer, encoder in text_encoders(pipe):
        key = SINGLE_ENCODER if name == "text_encoder" else name
        if key not in embedding.vectors:
            continue
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
    """A vocabulary entry as a reader knows it: CLIP's 'cat</w>' is the word cat and 'cat' alone begins a longer
    word; T5's '▁cat' and Qwen's 'Ġcat' are cat after a space."""
    if token.endswith(WORD_END):
        return token.removesuffix(WORD_END)
    if token.startswith(WORD_STARTS) and len(token) > 1:
        return token[1:]
    return f"{token}…"


def format_nearest(nearest: dict[str, list[list[tuple[str, float]]]]) -> str:
    """One line per vector: its nearest words with their similarity."""
    lines = []
    for encoder, rows in nearest.items():
        lines.append(f"nearest words ({encoder}, cosine similarity):")
        for index, row in enumerate(rows):
            lines.append(f"  vector {index}: " + ", ".join(f"{word} {score:.3f}" for word, score in row))
    return "\n".join(lines)
