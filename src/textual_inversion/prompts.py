"""Prompts with AUTOMATIC1111 weights, `a (<my-cat>:1.2) on the beach`, turned into embeddings by compel.

compel (https://github.com/damian0815/compel) applies the weights and encodes the text, but its own syntax
differs from AUTOMATIC1111's and it has no converter: in compel `(word)` is a plain group and `(word)1.3` or
`word++` a weight, `word-`, `.swap()`, `.and()` and `.blend()` are operators, and of the backslash escapes only
`\\(`, `\\)`, `\\"` are undone. A string translation could therefore not carry every A1111 prompt across
unchanged, so the A1111 syntax is read here (`parse_weights`) into compel's own prompt objects (text fragments
with weights), which compel then encodes, weights, splits into chunks of the text encoder's length and pads.
"""

from __future__ import annotations

import re

import torch

from .errors import UserError

EMPHASIS = 1.1  # `(word)` multiplies by 1.1 and `[word]` divides by it, as in AUTOMATIC1111
# One piece of A1111 attention syntax per match: an escaped character, `:1.3)` closing a weighted group, a
# bracket, or a run of plain text. The syntax is AUTOMATIC1111's (stable-diffusion-webui, modules/prompt_parser.py).
PIECE = re.compile(r"\\(?P<escaped>[()\[\]\\]?)|:\s*(?P<weight>[+-]?(?:\d+\.?\d*|\.\d+))\s*\)|(?P<bracket>[()\[\]])"
                   r"|(?P<text>[^\\()\[\]:]+|:)")
# `[a:b:0.5]` (switch words at a step) and `[a|b]` (alternate words) are A1111's prompt editing, not weights:
# a square group with `:` or `|` outside any inner group.
INNER_GROUP = re.compile(r"\([^()\[\]]*\)|\[[^()\[\]:|]*\]")
PROMPT_EDITING = re.compile(r"\[[^\[\]]*[:|][^\[\]]*\]")


def parse_weights(prompt: str, option: str = "--prompt") -> list[tuple[str, float]]:
    """A1111 attention syntax -> (text, weight) runs: `(x)` 1.1, `[x]` 1/1.1, `(x:1.3)` 1.3, nested ones multiply."""
    if uses_prompt_editing(prompt):
        raise UserError(f"{option} {prompt!r}: AUTOMATIC1111's prompt editing ([a:b:step], [a|b]) is not supported; "
                        "weights (word:1.3), (word) and [word] are, and \\[ writes a literal bracket")
    runs: list[list] = []  # [text, weight], weights multiplied in place as groups close
    open_round: list[int] = []  # index into `runs` where each still-open group starts
    open_square: list[int] = []

    def multiply_from(start: int, factor: float) -> None:
        for run in runs[start:]:
            run[1] *= factor

    for match in PIECE.finditer(prompt):
        bracket, weight = match["bracket"], match["weight"]
        if match["escaped"] is not None:
            runs.append([match["escaped"], 1.0])
        elif weight is not None and open_round:
            if float(weight) < 0:  # compel lerps a weight below 1 towards the prompt without the words, down to 0
                raise UserError(f"{option} {prompt!r}: weight {weight} is negative; use 0 to 1 to weaken words, or "
                                "put them in --negative-prompt")
            multiply_from(open_round.pop(), float(weight))
        elif bracket == "(":
            open_round.append(len(runs))
        elif bracket == "[":
            open_square.append(len(runs))
        elif bracket == ")" and open_round:
            multiply_from(open_round.pop(), EMPHASIS)
        elif bracket == "]" and open_square:
            multiply_from(open_square.pop(), 1 / EMPHASIS)
        else:  # plain text, or a closing bracket or `:1.3)` with no group open: kept as written
            runs.append([match[0], 1.0])
    # A1111 lets a group that is never closed run to the end of the prompt.
    for start in open_round:
        multiply_from(start, EMPHASIS)
    for start in open_square:
        multiply_from(start, 1 / EMPHASIS)
    merged: list[tuple[str, float]] = []
    for text, weight in runs:
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + text, weight)
        elif text:
            merged.append((text, weight))
    return merged


def uses_prompt_editing(prompt: str) -> bool:
    """Whether `prompt` holds A1111 prompt editing or alternation (`[a:b:0.5]`, `[a|b]`)."""
    text, previous = re.sub(r"\\.", "", prompt), None
    while text != previous:  # drop inner groups, innermost first, so a `:` in `[(a:1.2)]` is not taken for one
        previous, text = text, INNER_GROUP.sub("", text)
    return bool(PROMPT_EDITING.search(text))


def has_weights(prompt: str | None) -> bool:
    """Whether `prompt` uses weight syntax (brackets or escapes that change what the model reads)."""
    return bool(prompt) and parse_weights(prompt) != [(prompt, 1.0)]


def prompt_embeddings(pipe, prompt: str, negative_prompt: str | None) -> dict[str, torch.Tensor]:
    """Keyword arguments for `pipe(...)` in place of `prompt=`/`negative_prompt=`: their embeddings with the
    A1111 weights applied by compel (`prompt_embeds`, `negative_prompt_embeds`, and the pooled ones for SDXL)."""
    from compel import Compel, ReturnedEmbeddingsType
    from diffusers import StableDiffusionXLPipeline

    positive = parse_weights(prompt, "--prompt")
    negative = parse_weights(negative_prompt or "", "--negative-prompt")
    sdxl = isinstance(pipe, StableDiffusionXLPipeline)
    # The layer each family conditions on, as the pipelines' own encode_prompt takes it: SD 1.x/2.x the final
    # (normalized) hidden states, SDXL the penultimate ones of both encoders, not normalized.
    layer = (ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED if sdxl
             else ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED)
    encoders = [(pipe.tokenizer, pipe.text_encoder)] + ([(pipe.tokenizer_2, pipe.text_encoder_2)] if sdxl else [])
    positives, negatives = [], []
    with torch.no_grad():
        for tokenizer, text_encoder in encoders:
            # Long prompts go on in further chunks, as in A1111, rather than being cut at the tokenizer's length.
            compel = Compel(tokenizer=tokenizer, text_encoder=text_encoder, returned_embeddings_type=layer,
                            truncate_long_prompts=False)
            pair = [encode(compel, pipe, tokenizer, runs) for runs in (positive, negative)]
            positive_embeds, negative_embeds = compel.pad_conditioning_tensors_to_same_length(pair)
            positives.append(positive_embeds)
            negatives.append(negative_embeds)
        # SDXL joins its two encoders' states along the feature axis; both tokenizers share CLIP's vocabulary
        # (and the learned tokens), so both texts come out in the same number of chunks.
        arguments = {"prompt_embeds": torch.cat(positives, dim=-1), "negative_prompt_embeds": torch.cat(negatives, dim=-1)}
        if sdxl:
            # The pooled vector is the second encoder's, of the text without weights (compel weights no pooled output).
            pooled = [compel.conditioning_provider.get_pooled_embeddings([plain_text(pipe, pipe.tokenizer_2, runs)])
                      for runs in (positive, negative)]
            arguments["pooled_prompt_embeds"], arguments["negative_pooled_prompt_embeds"] = pooled
            if negative_prompt is None and pipe.config.get("force_zeros_for_empty_prompt", False):
                # What the SDXL pipeline does itself for a missing negative prompt.
                arguments["negative_prompt_embeds"] = torch.zeros_like(arguments["negative_prompt_embeds"])
                arguments["negative_pooled_prompt_embeds"] = torch.zeros_like(pooled[1])
    return arguments


def plain_text(pipe, tokenizer, runs: list[tuple[str, float]]) -> str:
    """The prompt's text without its weights, multi-vector learned tokens spelled out for `tokenizer`."""
    return pipe.maybe_convert_prompt("".join(text for text, _ in runs), tokenizer)


def encode(compel, pipe, tokenizer, runs: list[tuple[str, float]]) -> torch.Tensor:
    """One prompt's (text, weight) runs -> conditioning tensor [1, tokens, width], through compel."""
    from compel.prompt_parser import Conjunction, FlattenedPrompt

    # diffusers adds a learned token of n vectors as `<t>`, `<t>_1` ... `<t>_{n-1}`; its pipelines spell the
    # token out with maybe_convert_prompt before tokenizing, and so is it done here, run by run.
    # An empty prompt is one empty fragment: compel cannot tokenize a list of none.
    fragments = [(pipe.maybe_convert_prompt(text, tokenizer), weight) for text, weight in runs or [("", 1.0)]]
    conditioning, _ = compel.build_conditioning_tensor_for_conjunction(Conjunction([FlattenedPrompt(fragments)]))
    return conditioning
