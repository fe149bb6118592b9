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
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .atomic import write_text_atomic
from .errors import UserError

logger = logging.getLogger(__name__)

CONDITIONS = ("concept", "init_word", "words")
# How a concept's stand-in fills a prompt: a noun phrase for objects, an adjective for styles.
OBJECT_FIDELITY = ("{c}", "a {c}", "a photo of a {c}", "a picture of the {c}")
STYLE_FIDELITY = ("a {c} circle", "a {c} square", "a {c} heart", "a photo of a {c} triangle")
OBJECT_EDITS = {"background": "a {c} on a {v} background", "size": "a {v} {c}", "colour": "a {v} {c}"}
STYLE_EDITS = {"background": "a {c} circle on a {v} background", "size": "a {v} {c} circle",
               "colour": "a {v} {c} circle", "shape": "a {c} {v}"}


@dataclass
class ConceptSpec:
    """A concept's ground truth, from its `concept.toml`."""

    token: str
    init_word: str
    property: str
    words: str
    attributes: dict[str, str]
    free: list[str] = field(default_factory=list)

    @classmethod
    def from_toml(cls, path: str | Path) -> ConceptSpec:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            return cls(data["token"], data["init_word"], data.get("property", "object"), data["words"],
                       dict(data["attributes"]), list(data.get("free", [])))
        except FileNotFoundError:
            raise UserError(f"--concept-spec {path}: no such file") from None
        except (tomllib.TOMLDecodeError, KeyError, TypeError) as error:
            raise UserError(f"--concept-spec {path}: not a concept spec ({error}); it needs token, init_word, "
                            "words and an [attributes] table") from None


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


def evaluate_concept(pipe, spec: ConceptSpec, output_dir: Path, num_images: int = 4, steps: int = 25,
                     guidance: float = 4.0, seed: int = 0, conditions: tuple[str, ...] = CONDITIONS) -> dict:
    """Generate over the prompt set for each condition, score with the judge, write grids and JSON."""
    from .generation import save_grid
    from .miniworld.judge import load_judge, predict

    judge = load_judge()
    pipe.set_progress_bar_config(disable=True)
    cases = prompt_cases(spec)
    results: dict[str, dict] = {}
    records = []
    from tqdm.auto import tqdm

    progress = tqdm(total=len(cases) * len(conditions), desc="evaluating", unit="prompt")
    for condition in conditions:
        hits = {"fidelity": [], "edit": []}
        for case in cases:
            prompt = fill(case.template, stand_in(spec, condition))
            generators = [torch.Generator().manual_seed(seed + i) for i in range(num_images)]
            images = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, num_images_per_prompt=num_images,
                          generator=generators).images
            predictions = predict(images, judge)
            matches = [all(p[k] == v for k, v in case.expected.items()) for p in predictions]
            hits["fidelity" if case.kind == "fidelity" else "edit"].extend(matches)
            slug = re.sub(r"[^A-Za-z0-9]+", "-", case.template.replace("{c}", "C")).strip("-")
            save_grid(images, output_dir / "grids" / condition / f"{slug}.png")
            records.append({"condition": condition, "prompt": prompt, "kind": case.kind, "expected": case.expected,
                            "predicted": predictions, "hit_rate": sum(matches) / len(matches)})
            progress.update(1)
        results[condition] = {"fidelity": mean(hits["fidelity"]), "editability": mean(hits["edit"])}
    progress.close()
    report = {**results.get("concept", {}), "baselines": {c: results[c] for c in conditions if c != "concept"},
              "token": spec.token, "num_images": num_images, "steps": steps, "guidance": guidance, "seed": seed,
              "prompts": records}
    write_text_atomic(output_dir / "evaluation.json", json.dumps(report, indent=2))
    return report


def mean(values: list[bool]) -> float:
    return sum(values) / len(values) if values else float("nan")


def format_table(report: dict) -> str:
    """The terminal table: fidelity and editability of the concept and its baselines."""
    rows = [("learned token", report)] + [(f"baseline: {name.replace('_', ' ')}", values)
                                          for name, values in report["baselines"].items()]
    lines = [f"{'':<22}{'fidelity':>10}{'editability':>13}"]
    lines += [f"{name:<22}{values['fidelity']:>10.2f}{values['editability']:>13.2f}" for name, values in rows]
    return "\n".join(lines)


def evaluate_from_config(config) -> dict:
    """The `evaluate` command: load model and concept, run the prompt set, return the report."""
    from .concepts import load_concepts, resolve_concept
    from .models import load_pipeline, pick_device

    config.validate()
    spec = ConceptSpec.from_toml(config.concept_spec)
    embedding = resolve_concept(config.concept)
    if embedding.token != spec.token:
        logger.info("using the concept's token %s in the spec's prompts (spec says %s)", embedding.token, spec.token)
        spec.token = embedding.token
    pipe = load_pipeline(config.model, config.model_config).to(pick_device(config.device))
    load_concepts(pipe, [embedding])
    return evaluate_concept(pipe, spec, Path(config.output_dir), config.num_images, config.steps, config.guidance,
                            config.seed)
