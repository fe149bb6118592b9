"""Combine and edit embeddings: weighted sums, concatenation, keeping some vectors, setting their lengths.

Pure functions over `formats.Embedding`; `merge` strings them together in a fixed order (combine, then
keep, then rescale) and records the recipe in the result's metadata, as the `merge` command writes it.
SDXL embeddings are combined per text encoder (clip_l with clip_l, clip_g with clip_g).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from .errors import UserError
from .formats import Embedding, family_label, read_embedding

# `file:weight`: only a trailing `:<number>` is a weight, so a path may itself hold ':' (C:\..., a:b.pt).
WEIGHTED_SOURCE = re.compile(r"^(?P<path>.+):(?P<weight>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)$")
# Metadata of the inputs worth keeping on the result when every input agrees on it.
SHARED_METADATA = ("base_model", "family")


@dataclass
class Part:
    """One input of a merge: where it came from (for messages and metadata), its embedding and weight."""

    source: str
    embedding: Embedding
    weight: float = 1.0


def parse_source(spec: str) -> tuple[str, float | None]:
    """'a.pt:0.7' -> ('a.pt', 0.7); a spec without a trailing ':<number>', or naming an existing file, has none."""
    match = WEIGHTED_SOURCE.match(spec)
    if match is None or Path(spec).is_file():
        return spec, None
    weight = float(match["weight"])
    if not math.isfinite(weight):
        raise UserError(f"{spec}: the weight {match['weight']} is not a finite number")
    return match["path"], weight


def read_parts(specs: list[str], concat: bool = False) -> list[Part]:
    """Read `file[:weight]` specs. Summing, either every file has a weight or none (then they are averaged);
    concatenating, a weight scales that file's vectors (default 1)."""
    if not specs:
        raise UserError("merge: give at least one embedding file")
    parsed = [parse_source(spec) for spec in specs]
    weights = [weight for _, weight in parsed]
    if not concat and None in weights and any(weight is not None for weight in weights):
        unweighted = next(path for path, weight in parsed if weight is None)
        raise UserError(f"{unweighted}: has no weight while other files have one; give every file a weight "
                        "(a.pt:0.7 b.pt:0.3) or none (an average)")
    default = 1.0 if concat else 1.0 / len(parsed)
    return [Part(path, read_embedding(path), default if weight is None else weight) for path, weight in parsed]


def check_compatible(parts: list[Part]) -> None:
    """Refuse inputs made for different text encoders or widths, naming the first mismatching pair."""
    first = parts[0]
    for part in parts[1:]:
        if part.embedding.widths() != first.embedding.widths():
            raise UserError(f"{part.source} ({describe_widths(part.embedding)}) and {first.source} "
                            f"({describe_widths(first.embedding)}) fit different models; merge embeddings of one family")


def describe_widths(embedding: Embedding) -> str:
    widths = ", ".join(f"{name} {width}" for name, width in embedding.widths().items())
    return f"{widths}: {family_label(embedding.family)}"


def weighted_sum(parts: list[Part], token: str) -> Embedding:
    """sum(weight x vectors) per text encoder; every input must hold the same number of vectors."""
    check_compatible(parts)
    first = parts[0]
    for part in parts[1:]:
        if part.embedding.num_vectors != first.embedding.num_vectors:
            raise UserError(f"{part.source} has {part.embedding.num_vectors} vector(s) and {first.source} "
                            f"{first.embedding.num_vectors}; a weighted sum needs the same count: use --concat, "
                            "or trim one first (--keep / --first)")
    vectors = {name: sum(part.weight * part.embedding.vectors[name] for part in parts)
               for name in first.embedding.vectors}
    return Embedding(token, vectors)


def concatenate(parts: list[Part], token: str) -> Embedding:
    """The inputs' vectors one after another (each times its weight): one multi-vector token."""
    check_compatible(parts)
    vectors = {name: torch.cat([part.weight * part.embedding.vectors[name] for part in parts])
               for name in parts[0].embedding.vectors}
    return Embedding(token, vectors)


def keep_vectors(embedding: Embedding, indices: list[int]) -> Embedding:
    """Only the vectors at `indices` (0-based, in that order)."""
    count = embedding.num_vectors
    if not indices:
        raise UserError("--keep: name at least one vector, e.g. --keep 0,2")
    wrong = [index for index in indices if not 0 <= index < count]
    if wrong:
        raise UserError(f"--keep {wrong[0]}: the embedding has {count} vector(s), numbered 0 to {count - 1}")
    rows = torch.tensor(indices)
    return Embedding(embedding.token, {name: tensor[rows] for name, tensor in embedding.vectors.items()})


def first_vectors(embedding: Embedding, count: int) -> Embedding:
    """The first `count` vectors."""
    if not 1 <= count <= embedding.num_vectors:
        raise UserError(f"--first {count}: the embedding has {embedding.num_vectors} vector(s); keep 1 to "
                        f"{embedding.num_vectors}")
    return keep_vectors(embedding, list(range(count)))


def set_norm(embedding: Embedding, norm: float) -> Embedding:
    """Every vector rescaled to length `norm`, its direction kept."""
    if not (math.isfinite(norm) and norm > 0):
        raise UserError(f"--norm {norm}: must be a positive length")
    lengths = {name: tensor.norm(dim=-1, keepdim=True) for name, tensor in embedding.vectors.items()}
    if any((length == 0).any() for length in lengths.values()):
        raise UserError("--norm: a vector is all zeros and has no direction to keep; use --keep to drop it")
    return Embedding(embedding.token, {name: tensor * (norm / lengths[name])
                                       for name, tensor in embedding.vectors.items()})


def scale(embedding: Embedding, factor: float) -> Embedding:
    """Every vector times `factor`."""
    if not math.isfinite(factor):
        raise UserError(f"--scale {factor}: must be a finite number")
    return Embedding(embedding.token, {name: tensor * factor for name, tensor in embedding.vectors.items()})


def merge(parts: list[Part], token: str | None = None, concat: bool = False, keep: list[int] | None = None,
          first: int | None = None, norm: float | None = None, factor: float | None = None) -> Embedding:
    """Combine `parts` (weighted sum, or `concat`), then keep some vectors, then rescale; the recipe goes
    into the metadata. `token` defaults to the first input's."""
    if keep is not None and first is not None:
        raise UserError("--keep and --first both choose vectors; give one of them")
    if norm is not None and factor is not None:
        raise UserError("--norm and --scale both set the vectors' lengths; give one of them")
    token = token or parts[0].embedding.token
    if any(character.isspace() for character in token):
        raise UserError(f"--token {token!r}: give one word without spaces, e.g. <my-mix>")
    merged = (concatenate if concat else weighted_sum)(parts, token)
    if keep is not None:
        merged = keep_vectors(merged, keep)
    elif first is not None:
        merged = first_vectors(merged, first)
    if norm is not None:
        merged = set_norm(merged, norm)
    elif factor is not None:
        merged = scale(merged, factor)
    merged.metadata = merge_metadata(parts, concat, keep, first, norm, factor)
    return merged


def merge_metadata(parts: list[Part], concat: bool, keep: list[int] | None, first: int | None,
                   norm: float | None, factor: float | None) -> dict[str, str]:
    """How a merged embedding was made: the inputs, their tokens and weights, and the edits after combining."""
    from . import __version__

    recipe = {"mode": "concat" if concat else "sum",
              "sources": [{"file": part.source, "token": part.embedding.token, "weight": part.weight} for part in parts]}
    edits = {"keep": keep, "first": first, "norm": norm, "scale": factor}
    recipe.update({name: value for name, value in edits.items() if value is not None})
    metadata = {"merge": json.dumps(recipe), "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "tool_version": __version__}
    for key in SHARED_METADATA:  # what every input agrees on still holds for the result
        values = {part.embedding.metadata.get(key) for part in parts}
        if len(values) == 1 and None not in values:
            metadata[key] = values.pop()
    return metadata


def parse_indices(text: str) -> list[int]:
    """'0,2' -> [0, 2] (for --keep)."""
    try:
        return [int(piece) for piece in text.split(",") if piece.strip()]
    except ValueError:
        raise UserError(f"--keep {text}: give vector numbers separated by commas, e.g. --keep 0,2") from None
