"""Context regularisation for textual inversion (the text-side term of CoRe, Wu et al. 2023).

A token that fits the pictures can still take over the prompt: the words after it ("... on a red
background") then lose their meaning and edits are ignored. CoRe's remedy is to keep the text encoder's
output for the *other* words of a prompt close to what it is when a plain word for the subject (the
super-category; here --init-token) stands in the token's place. Only the positions after the token can
differ: CLIP's attention is causal, so earlier words never see it. The penalty is 1 - cosine similarity,
averaged over those positions of the last hidden states (end-of-text included, which SDXL also pools) and
over the prompts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .tokens import spell_out_vectors


def positions_after(token_ids: list[int], word_ids: list[int], new_ids: set[int]) -> tuple[list[int], list[int]] | None:
    """Where the words after the token sit in the token's prompt (`token_ids`, the token's own ids in `new_ids`)
    and in the same prompt with the plain word (`word_ids`); None when the prompt holds the token other than
    exactly once, or the rest of the two prompts does not tokenize alike (nothing to compare then)."""
    spans = [i for i, t in enumerate(token_ids) if t in new_ids and (i == 0 or token_ids[i - 1] not in new_ids)]
    if len(spans) != 1:
        return None
    start = spans[0]
    end = start
    while end < len(token_ids) and token_ids[end] in new_ids:
        end += 1
    after = len(token_ids) - end
    if after < 1 or len(word_ids) - after <= start or token_ids[:start] != word_ids[:start] \
            or token_ids[end:] != word_ids[len(word_ids) - after:]:
        return None
    return list(range(end, len(token_ids))), list(range(len(word_ids) - after, len(word_ids)))


def context_penalty(tokenizer, encoder, prompts: list[str], token: str, word: str, new_ids: set[int]) -> torch.Tensor | None:
    """Mean (1 - cosine similarity) between `encoder`'s outputs for the words after `token` in `prompts` and
    for the same words with `word` in its place; gradients reach the token's rows only through the first.
    None when no prompt has words after the token to compare."""
    token_prompts = [spell_out_vectors(p, tokenizer) for p in prompts]
    word_prompts = [p.replace(token, word) for p in prompts]
    pairs, kept = [], []
    for index, (with_token, with_word) in enumerate(zip(token_prompts, word_prompts, strict=True)):
        found = positions_after(tokenizer(with_token, truncation=True).input_ids,
                                tokenizer(with_word, truncation=True).input_ids, new_ids)
        if found is not None:
            pairs.append(found)
            kept.append(index)
    if not kept:
        return None

    def encode(texts: list[str]) -> torch.Tensor:  # [P, 77, D]; positions up to the end token ignore padding
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(encoder.device)
        # By name: SDXL's second encoder (with projection) returns its pooled embedding first.
        return encoder(ids).last_hidden_state

    with torch.no_grad():
        reference = encode([word_prompts[i] for i in kept])
    outputs = encode([token_prompts[i] for i in kept])
    penalties = [1 - F.cosine_similarity(outputs[n, a].float(), reference[n, b].float(), dim=-1).mean()
                 for n, (a, b) in enumerate(pairs)]
    return torch.stack(penalties).mean()
