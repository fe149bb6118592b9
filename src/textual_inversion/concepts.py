"""Find learned concepts (files, run folders, concept-library repos) and load them into a pipeline."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .extended_conditioning import is_extended_file, load_extended
from .formats import Embedding, read_embedding, tensor_names
from .lora_bundle import is_bundle, read_bundle
from .methods import METHODS
from .models import check_fits, hub_unreachable, is_transformer_family, read_as, text_encoders
from .outputs import EMBEDDING, EXTENDED, LORA, OUTPUT_FILES, PIPELINE
from .rundir import read_run_file

logger = logging.getLogger(__name__)

CONCEPT_LIBRARY_FILES = ("learned_embeds.bin", "token_identifier.txt")
# A prompt word in angle brackets is a concept token by convention; `<|...|>` are tokenizer specials.
TOKEN_PATTERN = re.compile(r"<[^<>|\s]+>")


@dataclass
class Concept:
    """What one --concept holds, read once: ("embedding", Embedding), ("lora", path, or a bundle LoRA's tensors),
    ("pipeline", folder) and/or ("trigger", word) parts. A pivotal-tuning run holds an embedding and a LoRA; DreamBooth, a pipeline."""

    source: str
    parts: list[tuple[str, object]]

    def of_kind(self, kind: str) -> list:
        return [part for part_kind, part in self.parts if part_kind == kind]


def read_concept(spec: str | Path | Concept) -> Concept:
    """A file, a run's output folder, a concept-library folder or repo id, as its parts."""
    if isinstance(spec, Concept):
        return spec
    return Concept(str(spec), concept_parts(str(spec)))


def resolve_concept(spec: str) -> Embedding:
    """The embedding of a concept: a file, a run's output folder, a concept-library folder or repo id."""
    concept = read_concept(spec)
    embeddings = concept.of_kind(EMBEDDING)
    standard = Path(spec) / OUTPUT_FILES[EMBEDDING]
    if not embeddings and concept.of_kind(EXTENDED) and standard.is_file():  # an extended run: its sets' mean
        return read_embedding(standard)
    if not embeddings:
        raise UserError(f"--concept {spec}: holds no embedding (it is a LoRA or a pipeline)")
    return embeddings[0]


def concept_parts(spec: str) -> list[tuple[str, object]]:
    """What a --concept holds (see `Concept`)."""
    path = Path(spec)
    if path.is_file():
        if is_bundle(path):  # a LoRA with its embedding(s) inside: both parts, the LoRA as its tensors
            embeddings, lora_state = read_bundle(path)
            return [(EMBEDDING, embedding) for embedding in embeddings] + ([(LORA, lora_state)] if lora_state else [])
        if is_extended_file(path):
            return [(EXTENDED, path)]
        return [(LORA, path)] if is_lora_file(path) else [(EMBEDDING, read_embedding(path))]
    if path.is_dir():
        outputs, trigger = run_outputs(path)
        parts: list[tuple[str, object]] = []
        if (path / "model_index.json").is_file():
            parts.append((PIPELINE, path))
        if PIPELINE in outputs and (outputs[PIPELINE] / "model_index.json").is_file():
            parts.append((PIPELINE, outputs[PIPELINE]))
        library = (path / CONCEPT_LIBRARY_FILES[1]).is_file()  # a concept-library folder: its token file names the word
        if EXTENDED in outputs:  # a per-layer/per-stage run: its sets of vectors, not their mean in the standard file
            parts.append((EXTENDED, outputs[EXTENDED]))
        elif EMBEDDING in outputs and not library:
            parts.append((EMBEDDING, read_embedding(outputs[EMBEDDING])))
        elif EMBEDDING in outputs or (path / CONCEPT_LIBRARY_FILES[0]).is_file():
            parts.append((EMBEDDING, read_concept_library(path)))
        if LORA in outputs:
            parts.append((LORA, outputs[LORA]))
        if trigger:
            parts.append(("trigger", trigger))
        if not parts:
            raise UserError(f"--concept {spec}: folder holds no {OUTPUT_FILES[EMBEDDING]}, {OUTPUT_FILES[LORA]}, "
                            f"pipeline, or {CONCEPT_LIBRARY_FILES[0]}")
        return parts
    meant = read_as(spec)
    if meant == "path" or "/" not in spec:  # a concept-library repo is always `owner/name`
        raise UserError(f"--concept {spec}: no such file or folder")
    return [(EMBEDDING, download_concept_library(spec, cache_only=meant == "either"))]


def run_outputs(folder: Path) -> tuple[dict[str, Path], str | None]:
    """The outputs a run folder offers ({kind: path}) and the trigger word its weights respond to, if any.

    A finished run lists them in its run.json; for folders without that list (runs of earlier versions,
    or copied by hand) the outputs are found by their file names and the trigger word by the method.
    """
    record = read_run_file(folder) or {}
    listed = record.get("outputs")
    if isinstance(listed, dict):
        outputs = {kind: folder / name for kind, name in listed.items() if (folder / name).exists()}
        return outputs, record.get("trigger_word")
    outputs = {kind: folder / name for kind, name in OUTPUT_FILES.items() if (folder / name).exists()}
    config = record.get("config", {}) if isinstance(record.get("config"), dict) else {}
    method = METHODS.get(config.get("method"))
    return outputs, config.get("token") if method is not None and not method.adds_token else None


def is_lora_file(path: Path) -> bool:
    """A .safetensors file whose tensor names are LoRA's (diffusers/peft or kohya layout)."""
    return any("lora" in key for key in tensor_names(path))


def pipeline_of(concepts: list) -> str | None:
    """The DreamBooth pipeline among `concepts` (specs or `Concept`s), which then serves as the model (at most one)."""
    pipelines = [str(part) for concept in concepts for part in read_concept(concept).of_kind(PIPELINE)]
    if len(pipelines) > 1:
        raise UserError(f"--concept: {len(pipelines)} DreamBooth pipelines given ({', '.join(pipelines)}); "
                        "a picture comes from one model, so pass one")
    return pipelines[0] if pipelines else None


def read_concept_library(folder: Path) -> Embedding:
    """The HF concept-library layout: learned_embeds.safetensors (newer repos, and `export`'s) or learned_embeds.bin,
    plus the token in token_identifier.txt."""
    token_file = folder / CONCEPT_LIBRARY_FILES[1]
    token = token_file.read_text(encoding="utf-8").strip() if token_file.is_file() else None
    safe = folder / OUTPUT_FILES[EMBEDDING]  # no pickle to open when both are there
    return read_embedding(safe if safe.is_file() else folder / CONCEPT_LIBRARY_FILES[0], token=token or None)


def download_concept_library(repo_id: str, cache_only: bool = False) -> Embedding:
    """Fetch a concept-library repo through huggingface_hub (its cache serves it offline).

    `cache_only`: `repo_id` may as well be a mistyped path (`runs/x` where runs/ is a folder here), so the
    hub is not asked; only what is already in the cache is used.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    # Newer repos (and `export`'s, the only layout of Flux, SD3 and Z-Image files) hold learned_embeds.safetensors;
    # the library's older ones learned_embeds.bin.
    names = (OUTPUT_FILES[EMBEDDING], CONCEPT_LIBRARY_FILES[0])
    if cache_only:
        cached = [found for found in (try_to_load_from_cache(repo_id, name) for name in names) if isinstance(found, str)]
        if not cached:
            parent = repo_id.split("/")[0]
            there = sorted(entry.name for entry in Path(parent).iterdir() if not entry.name.startswith("."))
            raise UserError(f"--concept {repo_id}: no such folder here, and not in the Hugging Face cache; "
                            f"check the path ({parent}/ holds {', '.join(there[:8]) or 'nothing'}"
                            f"{', ...' if len(there) > 8 else ''})")
        return read_concept_library(Path(cached[0]).parent)
    unreachable = hub_unreachable()
    try:
        for name in names:
            try:
                embeds = Path(hf_hub_download(repo_id, name, local_files_only=unreachable is not None))
                break
            except (EntryNotFoundError, LocalEntryNotFoundError):
                if name == names[-1]:
                    raise
        hf_hub_download(repo_id, CONCEPT_LIBRARY_FILES[1], local_files_only=unreachable is not None)
    except LocalEntryNotFoundError:
        raise UserError(f"--concept {repo_id}: no such folder here, and as a hub repo not in the Hugging Face cache, "
                        f"and the hub cannot be reached ({unreachable}); check the path, or download the repo where "
                        "there is a network and pass its folder") from None
    except (EntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise UserError(f"--concept {repo_id}: not a concept-library repo ({str(error).splitlines()[0][:200]})") from None
    return read_concept_library(embeds.parent)


def load_concepts(pipe, concepts: list) -> list[str]:
    """Load each concept's embedding(s) and LoRA into `pipe` with diffusers' own loaders.

    Returns the words the concepts define: tokens added, and the trigger words of DreamBooth and
    LoRA runs. DreamBooth pipelines are not loaded here: they are the model (see `pipeline_of`).
    """
    tokens, adapters, extended = [], [], []
    for concept in concepts:
        if isinstance(concept, Embedding):
            concept = Concept(concept.token, [(EMBEDDING, concept)])
        concept = read_concept(concept)
        source = concept.source
        for kind, part in concept.parts:
            if kind == EMBEDDING:
                tokens.append(load_embedding(pipe, part, source))
            elif kind == LORA:
                adapter = re.sub(r"[^A-Za-z0-9_]+", "_", f"{Path(source).stem}_{len(adapters)}")
                where = source if isinstance(part, dict) else part  # a bundle's LoRA comes as its tensors
                try:  # diffusers empties a dict of tensors as it converts it: give it a copy
                    pipe.load_lora_weights(dict(part) if isinstance(part, dict) else str(part), adapter_name=adapter)
                except Exception as error:  # diffusers' converters raise any type on a foreign or damaged file
                    reason = (str(error).splitlines() or [type(error).__name__])[0][:200]
                    raise UserError(f"{where}: not a LoRA for this model ({reason})") from None
                adapters.append(adapter)
                logger.info("loaded LoRA %s from %s", adapter, where)
            elif kind == "trigger":
                tokens.append(part)
            elif kind == EXTENDED:
                extended.append(part)
    # Last: an extended token wraps the text encoder, after which ordinary tokens could no longer be added to it.
    tokens += [load_extended(pipe, Path(path)) for path in extended]
    if len(adapters) > 1:
        pipe.set_adapters(adapters)
    return tokens


def load_embedding(pipe, embedding: Embedding, source: str) -> str:
    """Add the embedding's token to each text encoder it has vectors for: by diffusers' `load_textual_inversion`
    for SD, by `tokens.add_token` for the transformer families (SD3 and Z-Image have no diffusers loader)."""
    from .tokens import add_token

    check_fits(embedding, pipe, source)
    encoders = [entry for entry in text_encoders(pipe) if entry[0] in embedding.vectors]
    if any(embedding.token in tokenizer.get_vocab() for _, tokenizer, _ in encoders):
        raise UserError(f"{source}: token {embedding.token} is already in the vocabulary "
                        "(loaded twice, or a real word); rename it with `convert --token`")
    for name, tokenizer, encoder in encoders:
        vectors = embedding.vectors[name].to(encoder.dtype)
        if is_transformer_family(pipe):
            add_token(tokenizer, encoder, embedding.token, vectors)
        else:
            pipe.load_textual_inversion(vectors, token=embedding.token, tokenizer=tokenizer, text_encoder=encoder)
    logger.info("loaded %s (%d vector(s)) from %s", embedding.token, embedding.num_vectors, source)
    return embedding.token


def undefined_tokens(prompt: str, tokenizer) -> list[str]:
    """`<name>` words in `prompt` that the tokenizer does not know as one token."""
    vocab = tokenizer.get_vocab()
    return [word for word in TOKEN_PATTERN.findall(prompt) if word not in vocab]
