"""A tiny byte-level BPE vocabulary for the miniworld, saved in CLIPTokenizer format.

The base vocabulary holds all 256 byte-level unicode symbols and their ``</w>``
(end-of-word) forms, so *any* text can be tokenized. On top of that, merges are
learned with plain BPE over the world's words until each one is a single token.
Learning merges (rather than hand-writing prefix chains) guarantees that applying
them by rank reproduces every whole word.

The hidden colour and the held-out shape are deliberately *not* merged: the model
has no word for them, exactly like a real model facing a new concept.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2/CLIP's byte -> character table

from .captions import FILLER_WORDS
from .world import HELD_OUT_SHAPE, HIDDEN_COLOUR, VOCAB

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MODEL_MAX_LENGTH = 32


def world_words() -> list[str]:
    """Words that must be single tokens (vocabulary minus the two unnamed values)."""
    words = {w for values in VOCAB.values() for w in values} | set(FILLER_WORDS)
    words -= {HIDDEN_COLOUR, HELD_OUT_SHAPE}
    return sorted(words)


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Greedy BPE over ``words`` (count 1 each) until every word is one symbol."""
    segs = {w: [*w[:-1], w[-1] + "</w>"] for w in words}
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for seg in segs.values():
            for a, b in zip(seg, seg[1:], strict=False):
                pairs[(a, b)] += 1
        if not pairs:
            return merges
        # Most frequent pair; ties broken lexicographically so the result is deterministic.
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for w, seg in segs.items():
            out, i = [], 0
            while i < len(seg):
                if i + 1 < len(seg) and (seg[i], seg[i + 1]) == best:
                    out.append(seg[i] + seg[i + 1])
                    i += 2
                else:
                    out.append(seg[i])
                    i += 1
            segs[w] = out


def build_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Return (vocab, merges) in CLIP's layout: bytes, bytes</w>, merges, specials."""
    base = list(bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base]
    merges = learn_merges(world_words())
    tokens += ["".join(m) for m in merges]
    tokens += [BOS, EOS]
    vocab: dict[str, int] = {}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    return vocab, merges


def save_tokenizer(out_dir: str | Path) -> Path:
    """Write vocab.json, merges.txt and tokenizer config loadable by ``CLIPTokenizer``."""
    from transformers import CLIPTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab()
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    lines = ["#version: 0.2 - miniworld"] + [f"{a} {b}" for a, b in merges]
    (out / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = CLIPTokenizer(
        vocab_file=str(out / "vocab.json"),
        merges_file=str(out / "merges.txt"),
        vocab=vocab,
        merges=list(merges),
        model_max_length=MODEL_MAX_LENGTH,
    )
    tok.save_pretrained(str(out))
    return out
