"""What an exported concept holds (`SharedRun`) and the model card, README.md, that tells people how to use it.

The card is a Hugging Face model card: YAML front matter (license, base model, tags) that the hub reads,
then usage for diffusers, AUTOMATIC1111, ComfyUI and this tool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .concepts import CONCEPT_LIBRARY_FILES
from .formats import Embedding, family_label
from .outputs import EMBEDDING, LORA, OUTPUT_FILES

# The concept library's other files (its embedding and token files are `CONCEPT_LIBRARY_FILES`).
CONCEPT_TYPE_FILE = "type_of_concept.txt"  # "object" or "style"
CONCEPT_IMAGES_DIR = "concept_images"  # training pictures, named 0.jpeg, 1.jpeg, ...
MAX_SAMPLE_SIDE = 512  # pixels, the longer side of a picture copied for the card

# What the card lists of a run's training metadata (stored in the embedding file), in this order.
TRAINING_FACTS = ("method", "steps", "vectors", "init_token", "lr", "resolution", "seed", "created", "tool_version")


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


def example_prompt(run: SharedRun) -> str:
    """The run's preview prompt, else one for its kind of concept."""
    if run.validation_prompt and run.token in run.validation_prompt:
        return run.validation_prompt
    if run.concept_type == "style":
        return f"a lighthouse on a cliff in the style of {run.token}"
    return f"a photo of {run.token} on a wooden table"


def model_card(run: SharedRun, license: str, repo_id: str | None, stem: str, samples: list[str],
               preview: str | None, base_model_id: str | None) -> str:
    """README.md for the exported folder: front matter, what the concept is, how to load it, its files."""
    from huggingface_hub import ModelCardData

    sdxl = run.embedding.family == "sdxl"
    tags = ["textual_inversion", "diffusers", "stable-diffusion-xl" if sdxl else "stable-diffusion", "text-to-image"]
    if run.lora is not None:
        tags.append("lora")
    front_matter = ModelCardData(license=license, base_model=base_model_id, tags=tags,
                                 pipeline_tag="text-to-image").to_yaml()
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
    """The Python lines that load the base model."""
    if base_model_id:
        return f'pipe = AutoPipelineForText2Image.from_pretrained("{base_model_id}")  # .to("cuda") on a GPU'
    if run.base_model == "miniworld":
        return ("from textual_inversion.miniworld import model_path  # miniworld ships with textual-inversion\n\n"
                "pipe = AutoPipelineForText2Image.from_pretrained(model_path())")
    return f'pipe = AutoPipelineForText2Image.from_pretrained("{run.base_model}")  # the model it was trained on'


def diffusers_usage(run: SharedRun, repo_id: str | None, base_model_id: str | None) -> str:
    source = repo_id or "REPO_ID"
    embeds = OUTPUT_FILES[EMBEDDING]
    code = ["from diffusers import AutoPipelineForText2Image", "", load_base(run, base_model_id)]
    if run.lora is not None:
        code.append(f'pipe.load_lora_weights("{source}", weight_name="{OUTPUT_FILES[LORA]}")')
    if run.embedding.family == "sdxl":  # one set of vectors per text encoder, loaded one at a time
        code[:0] = ["from huggingface_hub import hf_hub_download", "from safetensors.torch import load_file"]
        code += [f'vectors = load_file(hf_hub_download("{source}", "{embeds}"))',
                 f'pipe.load_textual_inversion(vectors["clip_l"], token="{run.token}", '
                 'text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)',
                 f'pipe.load_textual_inversion(vectors["clip_g"], token="{run.token}", '
                 'text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)']
    else:
        code.append(f'pipe.load_textual_inversion("{source}", weight_name="{embeds}")')
    code.append(f'image = pipe("{example_prompt(run)}").images[0]')
    note = "" if repo_id else ("\n\n`REPO_ID` is the id of the hub repo this folder is uploaded to; for the folder "
                               "itself, give its path instead"
                               + (" (and read the file with `load_file(path + \"/" + embeds + "\")`)."
                                  if run.embedding.family == "sdxl" else "."))
    return "## Use it in diffusers\n\n```python\n" + "\n".join(code) + "\n```" + note


def webui_usage(run: SharedRun, stem: str) -> str:
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
    prompt = example_prompt(run).replace(run.token, f"embedding:{stem}")
    lines = ["## Use it in ComfyUI", "",
             f"Put `{stem}.safetensors` into `ComfyUI/models/embeddings/` and write `embedding:{stem}` in the text of "
             f"a CLIP Text Encode node, e.g. `{prompt}`."]
    if run.kohya_lora is not None:
        lines.append(f"\nThe LoRA: put `{stem}-lora.safetensors` into `ComfyUI/models/loras/` and load it with a "
                     "LoraLoader node between the checkpoint and the sampler.")
    return "\n".join(lines)


def own_usage(run: SharedRun, repo_id: str | None, stem: str) -> str:
    model = run.base_model or "MODEL"
    if run.lora is None:  # `--concept owner/name` fetches a concept-library repo's word by itself
        concept, steps = repo_id or "path/to/this/folder", ""
        note = "`--concept` takes the repo id or this folder."
    else:
        concept = stem if repo_id else "path/to/this/folder"
        steps = f"hf download {repo_id} --local-dir {stem}\n" if repo_id else ""
        note = ("`--concept` takes this folder: the word and the LoRA load together (a repo id would fetch the "
                "word alone).")
    return ("## Use it with textual-inversion\n\n```bash\n" + steps +
            f'textual-inversion generate --model {model} --concept {concept} --prompt "{example_prompt(run)}"\n```'
            f"\n\n{note}")


def files_table(run: SharedRun, stem: str, samples: list[str], preview: str | None) -> str:
    rows = [(OUTPUT_FILES[EMBEDDING], "the vectors, diffusers' layout (`load_textual_inversion`)"),
            (CONCEPT_LIBRARY_FILES[0], "the same vectors as a pickle, for concept-library loaders that read only it"),
            (f"{stem}.safetensors", "the same vectors for AUTOMATIC1111 and ComfyUI, named after the word"),
            (CONCEPT_LIBRARY_FILES[1], f"the word: `{run.token}`"),
            (CONCEPT_TYPE_FILE, f"`{run.concept_type}`")]
    if run.lora is not None:
        rows.append((OUTPUT_FILES[LORA], "the LoRA learned with the word, diffusers' layout (`load_lora_weights`)"))
    if run.kohya_lora is not None:
        rows.append((f"{stem}-lora.safetensors", "the same LoRA in kohya's layout, for AUTOMATIC1111 and ComfyUI"))
    if samples:
        rows.append((f"{CONCEPT_IMAGES_DIR}/", f"training pictures, at most {MAX_SAMPLE_SIDE} px"))
    if preview:
        rows.append((preview, "the last preview grid of the training run"))
    return "## Files\n\n| file | what it is |\n|---|---|\n" + "\n".join(f"| `{name}` | {what} |" for name, what in rows)
