"""Find learned concepts (files, run folders, concept-library repos) and load them into a pipeline."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from .errors import UserError
from .formats import Embedding, family_label, read_embedding
from .models import model_family, text_encoders

logger = logging.getLogger(__name__)

RUN_EMBEDDING = "learned_embeds.safetensors"
CONCEPT_LIBRARY_FILES = ("learned_embeds.bin", "token_identifier.txt")
# A prompt word in angle brackets is a concept token by convention; `<|...|>` are tokenizer specials.
TOKEN_PATTERN = re.compile(r"<[^<>|\s]+>")


def resolve_concept(spec: str) -> Embedding:
    """An embedding file, a run's output folder, a concept-library folder, or a hub repo id."""
    path = Path(spec)
    if path.is_file():
        return read_embedding(path)
    if path.is_dir():
        if (path / RUN_EMBEDDING).is_file():
            return read_embedding(path / RUN_EMBEDDING)
        if (path / CONCEPT_LIBRARY_FILES[0]).is_file():
            return read_concept_library(path)
        raise UserError(f"--concept {spec}: folder holds neither {RUN_EMBEDDING} nor {CONCEPT_LIBRARY_FILES[0]}")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        return download_concept_library(spec)
    raise UserError(f"--concept {spec}: no such file or folder")


def read_concept_library(folder: Path) -> Embedding:
    """The HF concept-library layout: learned_embeds.bin plus the token in token_identifier.txt."""
    token_file = folder / CONCEPT_LIBRARY_FILES[1]
    token = token_file.read_text(encoding="utf-8").strip() if token_file.is_file() else None
    return read_embedding(folder / CONCEPT_LIBRARY_FILES[0], token=token or None)


def download_concept_library(repo_id: str) -> Embedding:
    """Fetch a concept-library repo through huggingface_hub (its cache serves it offline)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        files = [Path(hf_hub_download(repo_id, name, local_files_only=offline)) for name in CONCEPT_LIBRARY_FILES]
    except LocalEntryNotFoundError:
        raise UserError(f"--concept {repo_id}: not in the Hugging Face cache and the hub cannot be reached "
                        "(offline); download the repo elsewhere and pass its folder") from None
    except (EntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise UserError(f"--concept {repo_id}: not a concept-library repo ({str(error).splitlines()[0][:200]})") from None
    return read_concept_library(files[0].parent)


def check_fits(embedding: Embedding, pipe, source: str) -> None:
    """Refuse an embedding made for another model family, naming both widths."""
    wanted = {name: encoder.get_input_embeddings().weight.shape[-1] for name, _, encoder in text_encoders(pipe)}
    if embedding.widths() != wanted:
        have = ", ".join(f"{k} {v}" for k, v in embedding.widths().items())
        need = ", ".join(f"{k} {v}" for k, v in wanted.items())
        raise UserError(f"{source}: embedding widths ({have}) fit {family_label(embedding.family)}, but the model "
                        f"({model_family(pipe)}) needs {need}; use an embedding trained for this model")


def load_concepts(pipe, concepts: list[str | Embedding]) -> list[str]:
    """Load each concept's token(s) into `pipe` with diffusers' own loader; return the tokens."""
    tokens = []
    for concept in concepts:
        embedding = concept if isinstance(concept, Embedding) else resolve_concept(str(concept))
        source = str(concept) if not isinstance(concept, Embedding) else embedding.token
        check_fits(embedding, pipe, source)
        if embedding.token in pipe.tokenizer.get_vocab():
            raise UserError(f"{source}: token {embedding.token} is already in the vocabulary "
                            "(loaded twice, or a real word); rename it with `convert --token`")
        for name, tokenizer, encoder in text_encoders(pipe):
            pipe.load_textual_inversion(embedding.vectors[name].to(encoder.dtype), token=embedding.token,
                                        tokenizer=tokenizer, text_encoder=encoder)
        logger.info("loaded %s (%d vector(s)) from %s", embedding.token, embedding.num_vectors, source)
        tokens.append(embedding.token)
    return tokens


def undefined_tokens(prompt: str, tokenizer) -> list[str]:
    """`<name>` words in `prompt` that the tokenizer does not know as one token."""
    vocab = tokenizer.get_vocab()
    return [word for word in TOKEN_PATTERN.findall(prompt) if word not in vocab]
