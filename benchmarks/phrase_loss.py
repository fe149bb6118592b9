"""Does the training objective prefer a concept's own words on its pictures?

On the packaged miniworld the plain words "a blue striped square" draw the blue striped square at the targets, yet
textual inversion started from those words ends drawing solid squares on one seed of two. This asks the objective
directly, with no training: the token is set to the word embeddings of a phrase (its own words, the words with the
pattern swapped for each other pattern or dropped, the init word), and the denoising loss is measured on the
concept's pictures and captions over the same fixed batches for every phrase (loss_against_fidelity's common random
numbers), overall and per quarter of the noise schedule. Each phrase is compared with the concept's own words sample
by sample: the mean difference and its standard error. A phrase with a lower loss than the words is where training
is pulled.

    python -m benchmarks.phrase_loss [--concepts blue-striped-square ...] [--batches 100]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .common import RESULTS_DIR, argument_parser, command, machine, print_and_write, weights_fingerprint
from .concept_set import CONCEPT_SET, find_concept
from .loss_against_fidelity import QUARTERS, fixed_batch_errors

# The concepts whose words name a pattern: the attribute the base model draws from words and a token may lose.
PATTERNED = [concept.name for _, concept in CONCEPT_SET if concept.attributes.get("pattern", "solid") != "solid"]


def phrases(spec) -> list[str]:
    """The phrases whose word embeddings stand in for the token: the concept's words (without the article), the
    words with the pattern swapped for each other pattern (dropped for solid, where the base model's captions name
    none; a style's token is the pattern word alone, so a style has no solid phrase), and the init word."""
    from textual_inversion.miniworld.world import PATTERNS

    words = spec.words.removeprefix("a ").split()
    pattern = spec.attributes["pattern"]
    swapped = [" ".join(w for w in (other if w == pattern else w for w in words) if w != "solid")
               for other in PATTERNS if other != pattern]
    return list(dict.fromkeys([" ".join(words), *(phrase for phrase in swapped if phrase), spec.init_word]))


def phrase_errors(pipe, phrase: str, folder: Path, spec, batches: int):
    """(errors, timesteps) of fixed_batch_errors with the token set to `phrase`'s word embeddings."""
    from textual_inversion.formats import Embedding, write_embedding

    ids = pipe.tokenizer(phrase, add_special_tokens=False).input_ids
    vectors = pipe.text_encoder.get_input_embeddings().weight[ids].detach().clone()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "phrase.safetensors"
        write_embedding(Embedding(token=spec.token, vectors={"text_encoder": vectors}), path)
        return fixed_batch_errors(path, folder, spec, batches)


def difference(errors, reference, mask=None) -> str:
    """Mean of (errors - reference) over the samples (those in `mask`), with its standard error."""
    delta = errors - reference if mask is None else (errors - reference)[mask]
    if len(delta) < 2:
        return "-"
    return f"{delta.mean().item():+.5f} ± {delta.std().item() / len(delta) ** 0.5:.5f}"


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--concepts", nargs="+", default=PATTERNED)
    parser.add_argument("--batches", type=int, default=100, help="fixed batches of 4 per phrase")
    parser.add_argument("--workdir", default="runs/concept-sweep", help="where the concept set is rendered")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from textual_inversion.miniworld import model_path
    from textual_inversion.models import load_pipeline

    torch.set_num_threads(args.threads)
    pipe = load_pipeline("miniworld")  # for its tokenizer and word embeddings; each loss runs on a fresh one
    table = []
    for concept in args.concepts:
        folder, spec = find_concept(concept, Path(args.workdir) / "concepts")
        measured = {phrase: phrase_errors(pipe, phrase, folder, spec, args.batches) for phrase in phrases(spec)}
        reference, timesteps = next(iter(measured.values()))
        lowest = min(measured, key=lambda phrase: measured[phrase][0].mean().item())
        for phrase, (errors, _) in measured.items():
            quarters = [difference(errors, reference, (timesteps >= low) & (timesteps < high)) for low, high in QUARTERS]
            mark = " (lowest)" if phrase == lowest else ""
            table.append(f"| {concept} | {phrase}{mark} | {errors.mean().item():.5f} | "
                         f"{difference(errors, reference) if errors is not reference else 'the words'} | "
                         + " | ".join(quarters if errors is not reference else ["-"] * 4) + " |")
            print(table[-1], flush=True)
    weights = weights_fingerprint(Path(model_path()))
    lines = [f"# The denoising loss of word phrases on the concepts' pictures ({machine('cpu', args.threads)})", "",
             f"Produced by `{command()}` on miniworld weights {weights}. The token holds the word embeddings of each "
             f"phrase; the loss is taken on the concept's five pictures and captions over {args.batches} fixed batches "
             "of 4 (the same pictures, noise and timesteps for every phrase). The difference is each sample's loss "
             "with the phrase minus with the concept's own words (first row), mean ± standard error: negative, the "
             "objective prefers the phrase to the words. Per quarter of the noise schedule, t from 0 (least noise) "
             "to 999.", "",
             "| concept | phrase | loss | against the words | t 0-249 | t 250-499 | t 500-749 | t 750-999 |",
             "|---|---|---|---|---|---|---|---|", *table]
    print_and_write(lines, RESULTS_DIR / f"phrase_loss_{weights}.md")


if __name__ == "__main__":
    main()
