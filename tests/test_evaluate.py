"""The miniworld evaluation: its prompt set, baselines and report (the judge's own tests are in miniworld/)."""

import pytest
from PIL import Image

from textual_inversion.errors import UserError
from textual_inversion.evaluate import ConceptSpec, fill, format_table, prompt_cases, stand_in

OBJECT = ConceptSpec("<teal-thing>", "circle", "object", "a teal circle", {"shape": "circle", "colour": "teal"},
                     ["background", "size", "position"])
STYLE = ConceptSpec("<dotted>", "pattern", "style", "dotted", {"pattern": "dotted"}, ["shape", "colour"])


def test_object_prompts_ask_for_the_concept_then_change_one_free_attribute():
    cases = prompt_cases(OBJECT)
    fidelity = [c for c in cases if c.kind == "fidelity"]
    edits = [c for c in cases if c.kind.startswith("edit:")]
    assert len(fidelity) == 4 and all(c.expected == OBJECT.attributes for c in fidelity)
    assert {c.kind for c in edits} == {"edit:background", "edit:size"}  # position is free but not judged
    navy = next(c for c in edits if "navy" in c.template)
    assert navy.expected == {"shape": "circle", "colour": "teal", "background": "navy"}
    assert fill(navy.template, stand_in(OBJECT, "concept")) == "a <teal-thing> on a navy background"
    assert fill(navy.template, stand_in(OBJECT, "words")) == "a teal circle on a navy background"
    assert fill("a {c}", stand_in(OBJECT, "init_word")) == "a circle"


def test_style_prompts_use_the_token_as_an_adjective():
    cases = prompt_cases(STYLE)
    heart = next(c for c in cases if c.kind == "edit:shape" and c.template.endswith("heart"))
    assert fill(heart.template, stand_in(STYLE, "concept")) == "a <dotted> heart"
    assert heart.expected == {"pattern": "dotted", "shape": "heart"}
    assert fill("a {c}", "orange thing") == "an orange thing"


def test_spec_errors_name_the_file(tmp_path):
    (tmp_path / "bad.toml").write_text('token = "<x>"\n')
    with pytest.raises(UserError, match="bad.toml: not a concept spec"):
        ConceptSpec.from_toml(tmp_path / "bad.toml")
    with pytest.raises(UserError, match="no such file"):
        ConceptSpec.from_toml(tmp_path / "none.toml")


def test_table_lists_concept_and_baselines():
    report = {"fidelity": 0.9, "editability": 0.75,
              "baselines": {"init_word": {"fidelity": 0.0, "editability": 0.0}, "words": {"fidelity": 0.1, "editability": 0.05}}}
    lines = format_table(report).splitlines()
    assert lines[0].split() == ["fidelity", "editability"]
    assert lines[1].split()[-2:] == ["0.900", "0.750"]
    assert lines[2].startswith("baseline: init word") and lines[3].startswith("baseline: words")


def test_grids_are_named_after_the_token_in_every_condition(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from PIL import Image

    from textual_inversion.evaluate import evaluate_concept
    from textual_inversion.miniworld import judge

    monkeypatch.setattr(judge, "load_judge", lambda: None)
    monkeypatch.setattr(judge, "predict", lambda images, net: [dict(OBJECT.attributes) for _ in images])
    pipe = lambda prompt, num_images_per_prompt, **kwargs: SimpleNamespace(  # noqa: E731
        images=[Image.new("RGB", (8, 8))] * num_images_per_prompt * (len(prompt) if isinstance(prompt, list) else 1))
    pipe.set_progress_bar_config = lambda **kwargs: None
    pipe.scheduler = None  # a pipeline's own, named in the report
    evaluate_concept(pipe, OBJECT, tmp_path, num_images=1, conditions=("concept", "init_word"), edits=False)
    for condition in ("concept", "init_word"):  # the baseline's grids under the same names, to compare
        assert sorted(p.name for p in (tmp_path / "grids" / condition).iterdir()) == \
            ["a-photo-of-a-teal-thing.png", "a-picture-of-the-teal-thing.png", "a-teal-thing.png", "teal-thing.png"]


def test_the_baselines_ask_the_model_without_the_concept(tmp_path, monkeypatch):
    """A LoRA changes the model: with it loaded the init word draws the subject, so the baselines use `base_pipe`."""
    from types import SimpleNamespace

    from textual_inversion.evaluate import evaluate_concept
    from textual_inversion.miniworld import judge

    asked = {}

    def fake_pipe(name):
        def pipe(prompt, num_images_per_prompt, **kwargs):
            asked.setdefault(name, []).extend(prompt if isinstance(prompt, list) else [prompt])
            return SimpleNamespace(images=[Image.new("RGB", (8, 8))] * num_images_per_prompt * len(prompt))
        pipe.set_progress_bar_config = lambda **kwargs: None
        pipe.scheduler = None
        return pipe

    monkeypatch.setattr(judge, "load_judge", lambda: None)
    monkeypatch.setattr(judge, "predict", lambda images, net: [dict(OBJECT.attributes) for _ in images])
    evaluate_concept(fake_pipe("with the concept"), OBJECT, tmp_path, num_images=1, edits=False,
                     base_pipe=fake_pipe("base"))
    assert asked["with the concept"] and all("<teal-thing>" in prompt for prompt in asked["with the concept"])
    assert "a circle" in asked["base"] and not any("<teal-thing>" in prompt for prompt in asked["base"])


def test_prompts_generated_together_give_each_image_its_own_seed(tmp_path):
    """Five prompts per pipeline call or one at a time: the same images, up to the batched arithmetic's last bits."""
    import numpy as np

    from textual_inversion.evaluate import evaluate_concept
    from textual_inversion.models import load_pipeline

    pipe = load_pipeline("miniworld")
    reports = [evaluate_concept(pipe, OBJECT, tmp_path / str(n), num_images=2, steps=4, conditions=("words",),
                                edits=False, prompts_per_call=n) for n in (1, 5)]
    assert [r["predicted"] for r in reports[0]["prompts"]] == [r["predicted"] for r in reports[1]["prompts"]]
    for grid in (tmp_path / "1" / "grids" / "words").iterdir():
        one, together = (np.asarray(Image.open(folder / "grids" / "words" / grid.name), dtype=float)
                         for folder in (tmp_path / "1", tmp_path / "5"))
        assert np.abs(one - together).max() <= 2


def test_an_evaluation_sampler_is_used_for_that_evaluation_only(tiny_sd1_path, tmp_path, monkeypatch):
    """The pipeline may be a training run's: its own scheduler comes back afterwards, after a failure too."""
    from textual_inversion.evaluate import evaluate_concept
    from textual_inversion.miniworld import judge
    from textual_inversion.models import load_pipeline

    pipe = load_pipeline(tiny_sd1_path)
    own = pipe.scheduler
    used = []
    monkeypatch.setattr(judge, "load_judge", lambda: None)

    def predict(images, net):
        used.append(type(pipe.scheduler).__name__)
        return [dict(OBJECT.attributes) for _ in images]

    monkeypatch.setattr(judge, "predict", predict)
    report = evaluate_concept(pipe, OBJECT, tmp_path / "fast", num_images=1, steps=2, conditions=("words",),
                              edits=False, scheduler="dpm++")
    assert report["scheduler"] == "DPMSolverMultistepScheduler" and set(used) == {"DPMSolverMultistepScheduler"}
    assert pipe.scheduler is own
    assert evaluate_concept(pipe, OBJECT, tmp_path / "own", num_images=1, steps=2, conditions=("words",),
                            edits=False)["scheduler"] == type(own).__name__

    monkeypatch.setattr(judge, "predict", lambda images, net: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        evaluate_concept(pipe, OBJECT, tmp_path / "failed", num_images=1, steps=2, conditions=("words",),
                         edits=False, scheduler="euler")
    assert pipe.scheduler is own
    with pytest.raises(UserError, match="--scheduler warp: choose one of"):
        evaluate_concept(pipe, OBJECT, tmp_path / "unknown", num_images=1, steps=2, scheduler="warp")


def test_dreambench_metrics_against_hand_computed_values():
    import torch

    from textual_inversion.metrics import mean_matched_cosine, mean_pairwise_cosine, remove_token

    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    # pairs: (a0,b0)=1, (a0,b1)=1/sqrt2, (a1,b0)=0, (a1,b1)=1/sqrt2
    assert mean_pairwise_cosine(a, b) == pytest.approx((1 + 2 / 2 ** 0.5) / 4)
    assert mean_matched_cosine(a, b) == pytest.approx((1 + 1 / 2 ** 0.5) / 2)
    assert remove_token("a <cat-toy> <cat-toy>_1 on the beach", "<cat-toy>") == "a on the beach"


@pytest.fixture(scope="module")
def tiny_judges(tmp_path_factory):
    from textual_inversion.tiny import build_tiny_clip, build_tiny_dino

    root = tmp_path_factory.mktemp("judges")
    return str(build_tiny_clip(root / "clip")), str(build_tiny_dino(root / "dino"))


def test_feature_extractor_scores_match_the_formulas(tiny_judges):
    import torch
    from PIL import Image

    from textual_inversion.metrics import FeatureExtractor, score_images

    features = FeatureExtractor(*tiny_judges)
    generated = [Image.new("RGB", (40, 40), (255, 0, 0)), Image.new("RGB", (40, 40), (0, 0, 255))]
    real = [Image.new("RGB", (40, 40), (250, 10, 10))]
    scores = score_images(features, generated, ["a <t> cat", "a <t> dog"], real, "<t>")
    d_gen, d_real = features.dino_images(generated), features.dino_images(real)
    expected_dino = torch.nn.functional.cosine_similarity(d_gen, d_real.expand_as(d_gen)).mean().item()
    assert scores["dino"] == pytest.approx(expected_dino, abs=1e-6)
    texts = features.clip_texts(["a cat", "a dog"])  # token removed
    expected_t = torch.nn.functional.cosine_similarity(features.clip_images(generated), texts).mean().item()
    assert scores["clip_t"] == pytest.approx(expected_t, abs=1e-6)
    assert -1 <= scores["clip_i"] <= 1


def test_evaluate_command_writes_json_grids_and_report(tiny_sd1_path, tiny_judges, image_folder, tmp_path, capsys):
    import json

    import torch

    from textual_inversion.cli import main
    from textual_inversion.formats import Embedding, write_embedding

    concepts = []
    for name in ("run-a", "run-b"):
        embedding = Embedding("<blob>", {"text_encoder": torch.randn(1, 768)}, {"init_token": "cat"})
        (tmp_path / name).mkdir()
        concepts += ["--concept", str(write_embedding(embedding, tmp_path / name / "learned_embeds.safetensors"))]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a {token} on the beach\na red {token}\n")
    out = tmp_path / "eval"
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", tiny_sd1_path, *concepts, "--images", str(image_folder), "--prompts",
              str(prompts), "--clip", tiny_judges[0], "--dino", tiny_judges[1], "--num-images", "2", "--steps", "2",
              "--output-dir", str(out)])
    assert exit_info.value.code == 0
    report = json.loads((out / "evaluation.json").read_text())
    assert [c["name"] for c in report["concepts"]] == ["run-a", "run-b"]
    assert report["base_model"]["words"] == "cat"
    for row in report["concepts"] + [report["base_model"]]:
        assert {"dino", "clip_i", "clip_t"} <= set(row)
    assert sorted(p.name for p in (out / "grids" / "run-a").iterdir()) == ["a-blob-on-the-beach.png", "a-red-blob.png"]
    page = (out / "report.html").read_text()
    assert "<svg" in page and "run-b" in page and "data:image/png;base64," in page
    table = capsys.readouterr().out
    assert "DINO" in table and "base model" in table


def test_missing_clip_offline_says_what_to_download(tmp_path, monkeypatch):
    from textual_inversion.errors import UserError
    from textual_inversion.metrics import load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="--clip openai/clip-vit-base-patch32: .* `hf download .* pass --clip"):
        load_model("clip", "openai/clip-vit-base-patch32")


def test_with_the_judge_missing_default_models_are_skipped_with_one_line(tiny_judges, tmp_path, monkeypatch, caplog):
    """Offline on miniworld, CLIP and DINO at their defaults and not cached: their scores are skipped, the
    judge's stay; a model the user named, or no judge, is still an error."""
    import logging
    import time

    from PIL import Image

    from textual_inversion.config import EvaluateConfig
    from textual_inversion.evaluate import load_features
    from textual_inversion.metrics import score_images

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="textual_inversion.evaluate"):
        assert load_features(EvaluateConfig(), judged=True, device="cpu") is None
    assert time.monotonic() - started < 5  # no hub retries
    assert caplog.messages == ["skipped DINO, CLIP-I, CLIP-T: facebook/dino-vits16 and openai/clip-vit-base-patch32: "
                               "not in the Hugging Face cache and the hub cannot be reached (offline: HF_HUB_OFFLINE "
                               "is set) (--dino FOLDER and --clip FOLDER add them)"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="textual_inversion.evaluate"):
        features = load_features(EvaluateConfig(clip=tiny_judges[0]), judged=True, device="cpu")
    assert caplog.messages[0].startswith("skipped DINO: facebook/dino-vits16: not in the Hugging Face cache")
    assert caplog.messages[0].endswith("(--dino FOLDER adds them)")
    image = Image.new("RGB", (40, 40), (255, 0, 0))
    assert set(score_images(features, [image], ["a <t>"], [image], "<t>")) == {"clip_i", "clip_t"}
    with pytest.raises(UserError, match="^--dino facebook/dino-vits16: not in the Hugging Face cache .* `hf download"):
        load_features(EvaluateConfig(), judged=False, device="cpu")
    with pytest.raises(UserError, match="^--clip someone/clip: not in the Hugging Face cache"):
        load_features(EvaluateConfig(clip="someone/clip", dino=tiny_judges[1]), judged=True, device="cpu")


@pytest.mark.slow
def test_evaluate_on_miniworld_offline_reports_the_judge_alone(tmp_path, capsys):
    """`evaluate --images` a bundled concept with no CLIP or DINO at hand: the judge's numbers, the report, exit 0."""
    import json
    from pathlib import Path

    import torch

    from textual_inversion.cli import main
    from textual_inversion.formats import Embedding, write_embedding

    concept = Path(__file__).resolve().parents[1] / "examples" / "concepts" / "hidden-colour"
    embedding = Embedding("<teal-thing>", {"text_encoder": torch.zeros(1, 128)}, {"init_token": "circle"})
    write_embedding(embedding, tmp_path / "run" / "learned_embeds.safetensors")
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--concept", str(tmp_path / "run"), "--images", str(concept), "--num-images", "1",
              "--steps", "2", "--output-dir", str(tmp_path / "eval")])
    assert exit_info.value.code == 0
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert {"fidelity", "editability", "baselines"} <= set(report) and not {"dino", "clip_i", "clip_t"} & set(report)
    page = (tmp_path / "eval" / "report.html").read_text()
    assert "fidelity (judge)" in page and "CLIP-I" not in page
    table = capsys.readouterr().out
    assert "fidelity" in table and "DINO" not in table
