"""Measure a learned concept on miniworld, where a judge knows the ground truth.

Fidelity: of the images generated for prompts that simply ask for the concept, the fraction
showing all its defining attributes. Editability: of the images for prompts that also change one
free attribute (background, size, colour or shape where free), the fraction showing the change
while the concept stays. Both are reported for the learned token and for two baselines: the
initializer word in its place, and the best plain-words description.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .atomic import write_text_atomic
from .errors import UserError
from .miniworld.concepts import OBJECT_FIDELITY, STYLE_FIDELITY, ConceptSpec
from .outputs import EMBEDDING, OUTPUT_FILES

logger = logging.getLogger(__name__)

CONDITIONS = ("concept", "init_word", "words")
# Prompts generated in one pipeline call by the judge's evaluation: on miniworld (2 CPU threads) 10 prompts of
# 4 images took 8.7-9.3 s in calls of 5 against 13.6-14.6 s one prompt at a time (measured 2026-11-30).
PROMPTS_PER_CALL = 5
# How a concept's stand-in fills a prompt: a noun phrase for objects, an adjective for styles.
OBJECT_EDITS = {"background": "a {c} on a {v} background", "size": "a {v} {c}", "colour": "a {v} {c}"}
STYLE_EDITS = {"background": "a {c} circle on a {v} background", "size": "a {v} {c} circle",
               "colour": "a {v} {c} circle", "shape": "a {c} {v}"}


@dataclass
class PromptCase:
    """One prompt template with what the judge must see in its images."""

    template: str  # with {c} for the concept's stand-in
    expected: dict[str, str]
    kind: str  # "fidelity" or "edit:<attribute>"


def prompt_cases(spec: ConceptSpec) -> list[PromptCase]:
    """The fixed prompt set: plain requests for the concept, then one edit per free attribute value."""
    from .miniworld.world import BACKGROUNDS, BASE_SHAPES, NAMED_COLOURS, SIZES

    style = spec.property == "style"
    cases = [PromptCase(t, dict(spec.attributes), "fidelity") for t in (STYLE_FIDELITY if style else OBJECT_FIDELITY)]
    values = {"background": BACKGROUNDS, "size": SIZES, "colour": NAMED_COLOURS, "shape": BASE_SHAPES}
    edits = STYLE_EDITS if style else OBJECT_EDITS
    for attribute in spec.free:
        if attribute not in edits or attribute in spec.attributes:
            continue
        for value in values[attribute]:
            template = edits[attribute].replace("{v}", value)
            cases.append(PromptCase(template, {**spec.attributes, attribute: value}, f"edit:{attribute}"))
    return cases


def stand_in(spec: ConceptSpec, condition: str) -> str:
    """What fills {c}: the token, the initializer word, or the plain-words description."""
    if condition == "concept":
        return spec.token
    if condition == "init_word":
        return spec.init_word
    return re.sub(r"^(a|an|the)\s+", "", spec.words.strip())


def fill(template: str, filler: str) -> str:
    text = template.replace("{c}", filler)
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def grid_file_name(template: str, placeholder: str, token: str) -> str:
    """A prompt's grid file, named after the prompt with the token: a-teal-thing-on-a-grey-background.png.

    The same name in every condition's folder, so a concept's grid and its baselines' sit side by side;
    a token with no letters or digits (<*>) reads as `concept`.
    """
    word = re.sub(r"[^A-Za-z0-9]+", "-", token).strip("-") or "concept"
    return re.sub(r"[^A-Za-z0-9]+", "-", template.replace(placeholder, word)).strip("-")[:80] + ".png"


def evaluate_concept(pipe, spec: ConceptSpec, output_dir: Path, num_images: int = 4, steps: int = 25,
                     guidance: float = 4.0, seed: int = 0, conditions: tuple[str, ...] = CONDITIONS,
                     edits: bool = True, prompts_per_call: int = PROMPTS_PER_CALL, scheduler: str | None = None,
                     base_pipe=None) -> dict:
    """Generate over the prompt set for each condition, score with the judge, write grids and JSON.

    `edits=False` runs only the fidelity prompts (editability is then NaN), for quick checks.
    `prompts_per_call` prompts go through the pipeline together; each image keeps its own seed, so the
    images are those of one prompt at a time up to the last bits of the batched arithmetic.
    `scheduler` (a generation.SCHEDULERS name; None: the pipeline's own) samples for this evaluation only.
    `base_pipe`: the model without the concept, for the baselines, where the concept changed `pipe`'s weights
    (a LoRA); None: `pipe`.
    """
    from contextlib import ExitStack

    from tqdm.auto import tqdm

    from .generation import using_sampler

    base_pipe = base_pipe or pipe
    with ExitStack() as samplers:
        samplers.enter_context(using_sampler(pipe, scheduler))
        if base_pipe is not pipe:
            samplers.enter_context(using_sampler(base_pipe, scheduler))
        progress = tqdm(total=len(judged_cases(spec, edits)) * len(conditions), desc="evaluating", unit="prompt")
        scored = {condition: score_condition(pipe if condition == "concept" else base_pipe, spec, condition,
                                             output_dir, num_images, steps, guidance, seed, edits, prompts_per_call,
                                             progress.update) for condition in conditions}
        progress.close()
        report = judge_report(spec, scored, num_images, steps, guidance, seed, type(pipe.scheduler).__name__)
    write_text_atomic(output_dir / "evaluation.json", json.dumps(report, indent=2))
    return report


def judged_cases(spec: ConceptSpec, edits: bool = True) -> list[PromptCase]:
    return [case for case in prompt_cases(spec) if edits or case.kind == "fidelity"]


def score_condition(pipe, spec: ConceptSpec, condition: str, output_dir: Path, num_images: int = 4, steps: int = 25,
                    guidance: float = 4.0, seed: int = 0, edits: bool = True, prompts_per_call: int = PROMPTS_PER_CALL,
                    on_prompt=None) -> tuple[dict[str, float], list[dict]]:
    """One condition (a CONDITIONS name) over the prompt set: ({fidelity, editability}, a record per prompt).

    Writes each prompt's grid under `output_dir`/grids/`condition`; calls `on_prompt()` after each prompt.
    The images of a prompt have the same seeds in every condition (prompt_generators)."""
    from .generation import save_grid
    from .miniworld.judge import load_judge, predict

    judge = load_judge()
    pipe.set_progress_bar_config(disable=True)
    hits: dict[str, list[bool]] = {"fidelity": [], "edit": []}
    records = []
    numbered = list(enumerate(judged_cases(spec, edits)))  # a case's number picks its images' seeds
    for first in range(0, len(numbered), prompts_per_call):
        chunk = numbered[first:first + prompts_per_call]
        prompts = [fill(case.template, stand_in(spec, condition)) for _, case in chunk]
        generators = [g for case_index, _ in chunk for g in prompt_generators(seed, case_index, num_images)]
        images = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance,
                      num_images_per_prompt=num_images, generator=generators).images
        for position, ((_, case), prompt) in enumerate(zip(chunk, prompts, strict=True)):
            own = images[position * num_images:(position + 1) * num_images]
            predictions = predict(own, judge)
            matches = prompt_hits(predictions, case.expected)
            hits["fidelity" if case.kind == "fidelity" else "edit"].extend(matches)
            save_grid(own, output_dir / "grids" / condition / grid_file_name(case.template, "{c}", spec.token))
            records.append({"condition": condition, "prompt": prompt, "kind": case.kind, "expected": case.expected,
                            "predicted": predictions, "hit_rate": sum(matches) / len(matches)})
            if on_prompt is not None:
                on_prompt()
    return {"fidelity": mean(hits["fidelity"]), "editability": mean(hits["edit"])}, records


def prompt_hits(predictions: list[dict[str, str]], expected: dict[str, str]) -> list[bool]:
    """Per picture, whether the judge read every attribute the prompt asked for."""
    return [all(p[k] == v for k, v in expected.items()) for p in predictions]


def judge_report(spec: ConceptSpec, scored: dict[str, tuple[dict, list]], num_images: int, steps: int,
                 guidance: float, seed: int, scheduler: str) -> dict:
    """evaluation.json's content from score_condition's results per condition: the concept's scores at the top,
    the other conditions under "baselines", every prompt's record in CONDITIONS order."""
    ordered = [c for c in CONDITIONS if c in scored]
    return {**(scored["concept"][0] if "concept" in scored else {}),
            "baselines": {c: scored[c][0] for c in ordered if c != "concept"},
            "token": spec.token, "num_images": num_images, "steps": steps, "guidance": guidance, "seed": seed,
            "scheduler": scheduler, "prompts": [record for c in ordered for record in scored[c][1]]}


def prompt_generators(seed: int, prompt_index: int, num_images: int) -> list[torch.Generator]:
    """Seeds for one prompt's images: fresh noise per prompt, the same for every concept compared.

    With the same seeds for every prompt a score would rest on only `num_images` independent samples.
    """
    first = seed + prompt_index * num_images
    return [torch.Generator().manual_seed(first + i) for i in range(num_images)]


def mean(values: list[bool]) -> float:
    return sum(values) / len(values) if values else float("nan")


def format_table(report: dict) -> str:
    """The terminal table of a judge report: the learned token and its baselines."""
    rows = [{"name": "learned token", **report}] + [{"name": f"baseline: {name.replace('_', ' ')}", **values}
                                                    for name, values in report["baselines"].items()]
    return format_rows(rows)


def format_rows(rows: list[dict]) -> str:
    """One line per row (concept or baseline), one column per metric any row has."""
    from .report import LABELS, METRICS

    metrics = [m for m in METRICS if any(m in row for row in rows)]
    width = max(22, *(len(row["name"]) + 2 for row in rows))
    lines = [f"{'':<{width}}" + "".join(f"{LABELS[m].split(' ')[0]:>13}" for m in metrics)]
    for row in rows:
        lines.append(f"{row['name']:<{width}}" + "".join(f"{row[m]:>13.3f}" if m in row else f"{'-':>13}" for m in metrics))
    return "\n".join(lines)


def evaluate_from_config(config) -> dict:
    """The `evaluate` command: every concept (and the base model) over the prompt set, scored, reported."""
    from .concepts import load_concepts, pipeline_of, read_concept
    from .data import list_images, load_rgb
    from .models import load_pipeline, pick_device, use_threads
    from .report import write_report

    config.validate()
    device = pick_device(config.device)
    use_threads(config.threads)
    output_dir = Path(config.output_dir)
    spec_path = config.concept_spec
    if spec_path is None and config.model == "miniworld" and config.images and (Path(config.images) / "concept.toml").is_file():
        spec_path = Path(config.images) / "concept.toml"  # a bundled miniworld concept: the judge joins in
    spec = ConceptSpec.from_toml(spec_path) if spec_path else None
    real = [load_rgb(p) for p in list_images(config.images)] if config.images else []
    features = load_features(config, spec is not None, device) if real else None
    prompt_templates = read_prompts(config)
    rows, grids, concepts = [], {}, []
    base_words = None
    base = None  # the model without any concept, for the baselines
    for index, given in enumerate(config.concept):
        name = concept_name(given, index)
        concept = read_concept(given)
        pipe = load_pipeline(pipeline_of([concept]) or config.model, config.model_config).to(device)
        tokens = load_concepts(pipe, [concept])
        if not tokens:
            raise UserError(f"--concept {given}: defines no token to put in the prompts")
        token = tokens[0]
        result = {"name": name, "token": token}
        if spec is not None:
            spec.token = token
            # The judge's baselines ask the model without the concept, which a LoRA or a DreamBooth folder changes:
            # with a red star's LoRA loaded, "a cross" drew the star (fidelity 0.94; the base model 0.00).
            if index == 0:
                base = load_pipeline(config.model, config.model_config).to(device)
            judged = evaluate_concept(pipe, spec, output_dir / "judge" / name, config.num_images, config.steps,
                                      config.guidance, config.seed, conditions=CONDITIONS if index == 0 else ("concept",),
                                      base_pipe=base)
            result.update(fidelity=judged["fidelity"], editability=judged["editability"])
            if index == 0:
                result["baselines"] = judged["baselines"]
        if features is not None:
            result.update(score_prompts(pipe, features, prompt_templates, token, token, real, config,
                                        output_dir / "grids" / name, grids.setdefault(name, [])))
            base_words = base_words or base_word(concept, spec)
        rows.append({"name": name, **{k: v for k, v in result.items() if isinstance(v, float)}})
        concepts.append(result)
    report = {"concepts": concepts}
    if features is not None:  # the base model, the concept's word replaced by its plain initializer
        base = base or load_pipeline(config.model, config.model_config).to(device)
        scores = score_prompts(base, features, prompt_templates, base_words, concepts[0]["token"], real,
                               config, output_dir / "grids" / "base-model", grids.setdefault("base model", []))
        report["base_model"] = {"words": base_words, **scores}
        rows.append({"name": "base model", **scores})
    if len(concepts) == 1:
        report.update({k: v for k, v in concepts[0].items() if k not in ("name",)})
    write_text_atomic(output_dir / "evaluation.json", json.dumps(report, indent=2))
    report["report_html"] = str(write_report(output_dir / "report.html", rows, real, grids))
    report["rows"] = rows
    return report


def load_features(config, judged: bool, device: torch.device):
    """CLIP and DINO for the DreamBench scores, or None when neither can be loaded.

    With the judge (`judged`) there is a score without them: a default model that cannot be loaded (offline
    and not in the cache) is skipped, with one logged line; a model the user named must load.
    """
    from .config import EvaluateConfig
    from .metrics import FeatureExtractor

    defaults = EvaluateConfig()
    optional = [kind for kind, name, default in (("clip", config.clip, defaults.clip), ("dino", config.dino, defaults.dino))
                if judged and name == default]
    features = FeatureExtractor(config.clip, config.dino, str(device), optional)
    if features.skipped:
        logger.warning(features.skipped_line())
    return features if features.available else None


def read_prompts(config) -> list[str]:
    """Prompt templates with {token}: from --prompts, else DreamBench's set for the property."""
    from .templates import EVALUATION_OBJECT_PROMPTS, EVALUATION_STYLE_PROMPTS

    if config.prompts:
        path = Path(config.prompts)
        if not path.is_file():
            raise UserError(f"--prompts {path}: no such file")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines or any("{token}" not in line for line in lines):
            raise UserError(f"--prompts {path}: every line needs a {{token}} placeholder")
        return lines
    defaults = EVALUATION_STYLE_PROMPTS if config.property == "style" else EVALUATION_OBJECT_PROMPTS
    return [template.replace("{}", "{token}") for template in defaults]


def score_prompts(pipe, features, templates: list[str], filler: str, token: str, real: list, config,
                  grid_dir: Path, grid_paths: list) -> dict[str, float]:
    """Generate `num_images` per prompt with `filler` in the {token} place; DINO, CLIP-I, CLIP-T overall."""
    from .generation import save_grid
    from .metrics import score_images

    images, prompts = [], []
    pipe.set_progress_bar_config(disable=True)
    for prompt_index, template in enumerate(templates):
        prompt = template.replace("{token}", filler)
        generators = prompt_generators(config.seed, prompt_index, config.num_images)
        batch = pipe(prompt, num_inference_steps=config.steps, guidance_scale=config.guidance,
                     num_images_per_prompt=config.num_images, generator=generators).images
        grid_paths.append(save_grid(batch, grid_dir / grid_file_name(template, "{token}", token)))
        images += batch
        prompts += [template.replace("{token}", token)] * len(batch)
    return score_images(features, images, prompts, real, token)


def concept_name(concept: str, index: int) -> str:
    path = Path(str(concept))
    name = path.parent.name if path.name in OUTPUT_FILES.values() else path.stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or f"concept-{index}"


def base_word(concept, spec: ConceptSpec | None) -> str:
    """What stands for the `Concept` in the base model's prompts: the initializer word it was learned from."""
    if spec is not None:
        return spec.init_word
    for embedding in concept.of_kind(EMBEDDING):
        if embedding.metadata.get("init_token"):
            return embedding.metadata["init_token"]
    return "thing"
