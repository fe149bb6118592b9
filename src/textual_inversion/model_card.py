"""What an exported concept holds (`SharedRun`) and the model card, README.md, that tells people how to use it.

The card is a Hugging Face model card: YAML front matter (license, base model, tags) that the hub reads,
then usage for diffusers, AUTOMATIC1111, ComfyUI and this tool, each where it can load the family's file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .concepts import CONCEPT_LIBRARY_FILES
from .formats import COMFYUI_T5_KEY, TRANSFORMER_KEYS, Embedding, family_label
from .outputs import EMBEDDING, LORA, OUTPUT_FILES

# The concept library's other files (its embedding and token files are `CONCEPT_LIBRARY_FILES`).
CONCEPT_TYPE_FILE = "type_of_concept.txt"  # "object" or "style"
CONCEPT_IMAGES_DIR = "concept_images"  # training pictures, named 0.jpeg, 1.jpeg, ...
MAX_SAMPLE_SIDE = 512  # pixels, the longer side of a picture copied for the card

# What the card lists of a run's training metadata (stored in the embedding file), in this order.
TRAINING_FACTS = ("method", "steps", "vectors", "init_token", "lr", "resolution", "seed", "created", "tool_version")
# The hub tag that names each family's models, as its base models' own cards and most repos built on them spell it.
FAMILY_TAGS = {"sdxl": "stable-diffusion-xl", "flux": "flux", "sd3": "sd3", "z-image": "z-image"}
# Where diffusers' `load_textual_inversion` takes one encoder's vectors at a time: the (text encoder, tokenizer)
# attributes each file key goes to (models.ENCODER_KEYS). SD3's and Z-Image's pipelines have no such loader.
DIFFUSERS_ENCODERS = {"sdxl": {"clip_l": ("text_encoder", "tokenizer"), "clip_g": ("text_encoder_2", "tokenizer_2")},
                      "flux": {"clip_l": ("text_encoder", "tokenizer"), "t5": ("text_encoder_2", "tokenizer_2")}}


@dataclass
class SharedRun:
    """What a finished run offers for sharing, read from its folder and run.json."""

    folder: Path
    embedding: Embedding
    concept_type: str = "object"  # the run's --property: object or style
    base_model: str = ""
    lora: Path | None = None  # pivotal tuning's LoRA, diffusers layout
    kohya_lora: Path | None = None  # the same in kohya's layout, when the run wrote one (--kohya-copy)
    images: list[Path] = field(default_factory=list)
    preview: Path | None = None  # the newest preview grid
    validation_prompt: str | None = None

    @property
    def token(self) -> str:
        return self.embedding.token

    @property
    def transformer_family(self) -> bool:
        """Flux, SD3 or Z-Image: `.safetensors` files keyed by encoder, which AUTOMATIC1111 does not load."""
        return self.embedding.family in TRANSFORMER_KEYS


def word_file_format(family: str) -> str | None:
    """The layout of the copy named after the word, for the UIs that name the word after the file: SD's `a1111`
    (AUTOMATIC1111 and ComfyUI), Flux's and SD3's `comfyui` (ComfyUI alone, which reads T5's vectors as t5xxl);
    None for Z-Image, whose file no other tool reads."""
    if family not in TRANSFORMER_KEYS:
        return "a1111"
    return "comfyui" if family in ("flux", "sd3") else None


def diffusers_loads(family: str) -> bool:
    """Whether diffusers' `load_textual_inversion` loads the family's file (SD's and Flux's pipelines have it)."""
    return family not in TRANSFORMER_KEYS or family in DIFFUSERS_ENCODERS


def has_library_pickle(family: str) -> bool:
    """Whether the export holds the concept library's learned_embeds.bin: the transformer families' files are
    .safetensors only (formats.write_encoder_keys), and the loaders that read only the pickle predate them."""
    return family not in TRANSFORMER_KEYS


def example_prompt(run: SharedRun) -> str:
    """The run's preview prompt, else one for its kind of concept."""
    if run.validation_prompt and run.token in run.validation_prompt:
        return run.validation_prompt
    if run.concept_type == "style":
        return f"a lighthouse on a cliff in the style of {run.token}"
    return f"a photo of {run.token} on a wooden table"


def model_card(run: SharedRun, license: str, repo_id: str | None, stem: str, samples: list[str],
               preview: str | None, base_model_id: str | None, license_name: str | None = None,
               license_link: str | None = None) -> str:
    """README.md for the exported folder: front matter, what the concept is, how to load it, its files.

    `license_name` and `license_link` name a license the hub has no id for (`license: other`)."""
    from huggingface_hub import ModelCardData

    family = run.embedding.family
    # "diffusers" only where diffusers loads the word: the hub offers a load_textual_inversion snippet for it.
    library = ["diffusers"] if diffusers_loads(family) else []
    tags = ["textual_inversion", *library, FAMILY_TAGS.get(family, "stable-diffusion"), "text-to-image"]
    if run.lora is not None:
        tags.append("lora")
    front_matter = ModelCardData(license=license, license_name=license_name, license_link=license_link,
                                 base_model=base_model_id, tags=tags, pipeline_tag="text-to-image").to_yaml()
    parts = [f"---\n{front_matter}\n---", about(run, base_model_id), pictures(run, samples, preview),
             diffusers_usage(run, repo_id, base_model_id), webui_usage(run, stem), comfyui_usage(run, stem),
             own_usage(run, repo_id, stem), files_table(run, stem, samples, preview)]
    return "\n\n".join(part for part in parts if part) + "\n"


def about(run: SharedRun, base_model_id: str | None) -> str:
    embedding = run.embedding
    vectors = f"{embedding.num_vectors} vector{'s' if embedding.num_vectors > 1 else ''}"
    kind = "a style" if run.concept_type == "style" else "an object"
    lines = [f"# {run.token}", "",
             f"A learned word, `{run.token}`, for {kind}: Textual Inversion vectors ({vectors}) for "
             f"{family_label(embedding.family)}. The model itself is unchanged; write the word in a prompt "
             f"where you would name the {'style' if run.concept_type == 'style' else 'subject'}."]
    if run.transformer_family:
        lines[-1] += encoders_note(embedding)
    if run.lora is not None:
        lines.append(f"\nIt was learned with pivotal tuning: a LoRA (`{OUTPUT_FILES[LORA]}`) was trained together with "
                     "the word and belongs with it. Load both; the word alone draws a weaker likeness.")
    base = f"[`{base_model_id}`](https://huggingface.co/{base_model_id})" if base_model_id else f"`{run.base_model}`"
    lines.append(f"\nTrained on {base}, where it works best; other checkpoints of the same family may take it too.")
    facts = [f"- {name.replace('_', ' ')}: {embedding.metadata[name]}" for name in TRAINING_FACTS
             if embedding.metadata.get(name)]
    if facts:
        lines += ["", "How it was trained (textual-inversion):", "", *facts]
    return "\n".join(lines)


def encoders_note(embedding: Embedding) -> str:
    """Which of the family's text encoders the file has vectors for (--ti-encoders may have chosen some)."""
    keys = TRANSFORMER_KEYS[embedding.family]
    held = ", ".join(f"`{key}`" for key in keys if key in embedding.vectors)
    rest = [f"`{key}`" for key in keys if key not in embedding.vectors]
    note = f" It holds vectors for the {held} text encoder{'s' if ',' in held else ''}"
    return note + (f"; {', '.join(rest)} read{'s' if len(rest) == 1 else ''} the word as plain text." if rest else ".")


def pictures(run: SharedRun, samples: list[str], preview: str | None) -> str:
    lines = []
    if samples:
        lines += ["## Training pictures", "", " ".join(f"![training picture {i}]({path})" for i, path in enumerate(samples))]
    if preview:
        prompt = f' ("{run.validation_prompt}")' if run.validation_prompt else ""
        lines += ["", "## What it draws", "", f"The last preview of the training run{prompt}:", "",
                  f"![preview]({preview})"]
    return "\n".join(lines).strip()


def load_base(run: SharedRun, base_model_id: str | None) -> str:
    """The Python lines that load the base model (Flux in bfloat16: its 12B transformer is 48 GB in float32)."""
    dtype = ", torch_dtype=torch.bfloat16" if run.embedding.family == "flux" else ""
    if base_model_id:
        return f'pipe = AutoPipelineForText2Image.from_pretrained("{base_model_id}"{dtype})  # .to("cuda") on a GPU'
    if run.base_model == "miniworld":
        return ("from textual_inversion.miniworld import model_path  # miniworld ships with textual-inversion\n\n"
                "pipe = AutoPipelineForText2Image.from_pretrained(model_path())")
    return f'pipe = AutoPipelineForText2Image.from_pretrained("{run.base_model}"{dtype})  # the model it was trained on'


def diffusers_usage(run: SharedRun, repo_id: str | None, base_model_id: str | None) -> str:
    family = run.embedding.family
    if not diffusers_loads(family):
        return ("## Use it in diffusers\n\n"
                "diffusers' pipeline for this model has no `load_textual_inversion`. textual-inversion's own loader "
                "adds the word to each text encoder the file has vectors for: use `textual-inversion generate "
                "--concept` (below).")
    source = repo_id or "REPO_ID"
    embeds = OUTPUT_FILES[EMBEDDING]
    imports = ["import torch"] if family == "flux" else []  # load_base's dtype
    code = ["from diffusers import AutoPipelineForText2Image", "", load_base(run, base_model_id)]
    if run.lora is not None:
        code.append(f'pipe.load_lora_weights("{source}", weight_name="{OUTPUT_FILES[LORA]}")')
    per_encoder = DIFFUSERS_ENCODERS.get(family)
    if per_encoder:  # one set of vectors per text encoder, loaded one at a time
        imports += ["from huggingface_hub import hf_hub_download", "from safetensors.torch import load_file"]
        code.append(f'vectors = load_file(hf_hub_download("{source}", "{embeds}"))')
        code += [f'pipe.load_textual_inversion(vectors["{key}"], token="{run.token}", '
                 f'text_encoder=pipe.{encoder}, tokenizer=pipe.{tokenizer})'
                 for key, (encoder, tokenizer) in per_encoder.items() if key in run.embedding.vectors]
    else:
        code.append(f'pipe.load_textual_inversion("{source}", weight_name="{embeds}")')
    code[:0] = imports
    code.append(f'image = pipe("{example_prompt(run)}").images[0]')
    note = "" if repo_id else ("\n\n`REPO_ID` is the id of the hub repo this folder is uploaded to; for the folder "
                               "itself, give its path instead"
                               + (" (and read the file with `load_file(path + \"/" + embeds + "\")`)."
                                  if per_encoder else "."))
    return "## Use it in diffusers\n\n```python\n" + "\n".join(code) + "\n```" + note


def webui_usage(run: SharedRun, stem: str) -> str:
    if word_file_format(run.embedding.family) != "a1111":  # AUTOMATIC1111 loads SD embeddings only
        return ""
    prompt = example_prompt(run).replace(run.token, stem)
    lines = ["## Use it in AUTOMATIC1111", "",
             f"Put `{stem}.safetensors` into the `embeddings/` folder of stable-diffusion-webui and write `{stem}` in "
             "the prompt: the web UI names the word after the file (rename the file to change the word), e.g. "
             f"`{prompt}`."]
    if run.kohya_lora is not None:
        lines.append(f"\nThe LoRA: put `{stem}-lora.safetensors` into `models/Lora/` and add `<lora:{stem}-lora:1>` "
                     "to the prompt, beside the word.")
    elif run.lora is not None:
        lines.append(f"\nThe LoRA is here in diffusers' layout only (`{OUTPUT_FILES[LORA]}`); for the web UI the "
                     "word works alone, with less likeness (a run trained with `--kohya-copy` exports a "
                     "kohya-layout LoRA as well).")
    return "\n".join(lines)


def comfyui_usage(run: SharedRun, stem: str) -> str:
    layout = word_file_format(run.embedding.family)
    if layout is None:
        return ""
    prompt = example_prompt(run).replace(run.token, f"embedding:{stem}")
    lines = ["## Use it in ComfyUI", "",
             f"Put `{stem}.safetensors` into `ComfyUI/models/embeddings/` and write `embedding:{stem}` in the text of "
             f"a CLIP Text Encode node, e.g. `{prompt}`."]
    if layout == "comfyui":
        keys = [COMFYUI_T5_KEY if key == "t5" else key for key in TRANSFORMER_KEYS[run.embedding.family]
                if key in run.embedding.vectors]
        lines[-1] += (f" The file keys its vectors by text encoder ({', '.join(f'`{key}`' for key in keys)}, "
                      "as ComfyUI names them): each of the model's encoders takes its own.")
    if run.kohya_lora is not None:
        lines.append(f"\nThe LoRA: put `{stem}-lora.safetensors` into `ComfyUI/models/loras/` and load it with a "
                     "LoraLoader node between the checkpoint and the sampler.")
    elif run.lora is not None and layout == "comfyui":  # ComfyUI reads Flux's and SD3's LoRAs in diffusers' layout
        lines.append(f"\nThe LoRA: put `{OUTPUT_FILES[LORA]}` into `ComfyUI/models/loras/` (renamed as you like) and "
                     "load it with a LoraLoader node between the checkpoint and the sampler.")
    return "\n".join(lines)


def own_usage(run: SharedRun, repo_id: str | None, stem: str) -> str:
    model = run.base_model or "MODEL"
    if run.lora is None:  # `--concept owner/name` fetches a concept repo's word by itself
        concept, steps = repo_id or "path/to/this/folder", ""
        note = "`--concept` takes the repo id or this folder."
    else:
        concept = stem if repo_id else "path/to/this/folder"
        steps = f"hf download {repo_id} --local-dir {stem}\n" if repo_id else ""
        note = "`--concept` takes this folder: the word and the LoRA load together (a repo id would fetch the word alone)."
    return ("## Use it with textual-inversion\n\n```bash\n" + steps +
            f'textual-inversion generate --model {model} --concept {concept} --prompt "{example_prompt(run)}"\n```'
            f"\n\n{note}")


def files_table(run: SharedRun, stem: str, samples: list[str], preview: str | None) -> str:
    family = run.embedding.family
    if family not in TRANSFORMER_KEYS:
        vectors = "the vectors, diffusers' layout (`load_textual_inversion`)"
    else:
        loader = "`load_textual_inversion`, key by key" if diffusers_loads(family) else "textual-inversion's loader"
        vectors = f"the vectors, one key per text encoder ({loader})"
    rows = [(OUTPUT_FILES[EMBEDDING], vectors)]
    if has_library_pickle(family):
        rows.append((CONCEPT_LIBRARY_FILES[0], "the same vectors as a pickle, for concept-library loaders that read "
                                               "only it"))
    layout = word_file_format(family)
    if layout is not None:
        readers = "AUTOMATIC1111 and ComfyUI" if layout == "a1111" else f"ComfyUI (T5's as `{COMFYUI_T5_KEY}`)"
        rows.append((f"{stem}.safetensors", f"the same vectors for {readers}, named after the word"))
    rows += [(CONCEPT_LIBRARY_FILES[1], f"the word: `{run.token}`"), (CONCEPT_TYPE_FILE, f"`{run.concept_type}`")]
    if run.lora is not None:
        rows.append((OUTPUT_FILES[LORA], "the LoRA learned with the word, diffusers' layout (`load_lora_weights`)"))
    if run.kohya_lora is not None:
        rows.append((f"{stem}-lora.safetensors", "the same LoRA in kohya's layout, for AUTOMATIC1111 and ComfyUI"))
    if samples:
        rows.append((f"{CONCEPT_IMAGES_DIR}/", f"training pictures, at most {MAX_SAMPLE_SIDE} px"))
    if preview:
        rows.append((preview, "the last preview grid of the training run"))
    return "## Files\n\n| file | what it is |\n|---|---|\n" + "\n".join(f"| `{name}` | {what} |" for name, what in rows)
