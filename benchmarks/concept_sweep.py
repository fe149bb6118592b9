"""What each method learns on concepts nobody tuned for: the new concept set (benchmarks/concept_set.py) at
several training budgets and seeds, with the base model's own baselines beside it.

For each concept and seed one run trains to the largest budget with a constant learning rate, and the live
pipeline (which holds what is learned so far) is scored when the run passes each budget: with a constant rate
the first N steps of a long run are exactly a run of N steps. The judge scores as `evaluate` does (fidelity:
the plain prompts show every defining attribute; editability: an edit prompt honoured with the concept kept),
and the init word and the plain words (e.g. "a teal square") once per concept. Budgets are in UNet passes
(steps x batch, class pictures included). Every result is appended to benchmarks/results/concept_sweep.jsonl
(committed beside the tables: run folders under --workdir are not) as it is made, so a stopped sweep continues
where it was; the tables and the plot are written from everything there.

    python -m benchmarks.concept_sweep [--method lora] [--seeds 0 1] [--passes 200 800 3200] [--concepts ...]

Textual inversion runs with the demo's settings until 2026-12-02, which the README's by-hand command had then
(--vectors 6 --lr 0.05 --batch-size 4, captions as written); ti-average with the demo's since (--lr 0.1
--ema-decay 0.99); METHODS below has every method's.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path

from .common import (
    argument_parser,
    command,
    former_settings,
    print_and_write,
    with_former_defaults,
    with_init_token,
)
from .concept_set import SWEEP_RESULTS, concept_kind, find_concept, measured_on_packaged_model
from .methods import METHODS as MINIWORLD_SETTINGS
from .methods import human_size, output_bytes, run_settings, train_values

BATCH = 4
TEXTUAL_INVERSION = {"vectors": 6, "lr": 0.05}  # the demo's settings until 2026-12-02 (the README's by-hand command)
# The demo's settings since 2026-12-02: twice the rate, the saved vectors their moving average (ti-average below).
TI_AVERAGE = {**TEXTUAL_INVERSION, "lr": 0.1, "ema_decay": 0.99}
# Half of the timesteps from the noisiest tenth (t >= 900), where miniworld decides the pattern (pattern_binding.md).
STRIPES_BIAS = {"timestep_bias": "later", "timestep_bias_portion": 0.1, "timestep_bias_multiplier": 9.0}
DREAMBOOTH = {"method": "dreambooth", **MINIWORLD_SETTINGS["dreambooth"], "class_prompt": "a {init}"}
# --method's choices: the name each is recorded under and its training settings. LoRA, pivotal tuning and
# DreamBooth take benchmarks/methods.py's settings for miniworld (chosen on the bundled concepts, not on this
# set); pivotal tuning's embeddings learn as textual inversion does here, and DreamBooth's class prompt is in
# miniworld's own words ("a cross").
METHODS = {
    "textual-inversion": TEXTUAL_INVERSION,
    # What `train` gave a user who left every option out until 2026-12-05 (1 vector, lr 5e-3, batch 1, no moving
    # average; 500 passes were its 500 steps). On miniworld it gives ti-average's settings (below) since.
    "ti-former-defaults": former_settings("textual-inversion"),
    # The same for --method pivotal (until 2026-12-05: LoRA rank 4 at 1e-4, the embeddings learning every step).
    "pivotal-former-defaults": {"method": "pivotal", **former_settings("pivotal")},
    # The same for --method lora (rank 4 at 1e-4, diffusers' LoRA script's, on the attention only, constant rate).
    "lora-former-defaults": {"method": "lora", **former_settings("lora")},
    "more-vectors": {**TEXTUAL_INVERSION, "vectors": 16},
    "per-layer": {**TEXTUAL_INVERSION, "per_layer": True},
    "time-stages": {**TEXTUAL_INVERSION, "time_stages": 4},
    "context-0.1": {**TEXTUAL_INVERSION, "context_weight": 0.1},
    "context-1": {**TEXTUAL_INVERSION, "context_weight": 1.0},
    # The rate decays to 0 over the run, so only the largest budget is a run of its own (sweep it alone).
    "ti-cosine": {**TEXTUAL_INVERSION, "lr_scheduler": "cosine"},
    # Half of the timesteps from the noisiest tenth (t >= 900), where miniworld decides the pattern
    # (pattern_binding.md); set once from that diagnosis, not tuned.
    "ti-cosine-later": {**TEXTUAL_INVERSION, "lr_scheduler": "cosine", **STRIPES_BIAS},
    # --init-token as the concept's plain words ("blue striped square") instead of one word: with the tool's rule
    # every vector starts from the words' mean (ti-words), or each word starts its share of the vectors in order
    # (ti-words-spread: blue blue striped striped square square, given as an --init-embedding file).
    # The saved vectors are their moving average over about the last 100 steps (decay 0.99), which only the
    # last step's result has: one budget per run. At twice the rate, which the average steadies; chosen on the
    # demo's seeds 0-7 (demo.md, demo_seeds4-7.md; they are the demo's settings since).
    "ti-average": TI_AVERAGE,
    # The same with three quarters of the timesteps from the noisier half of the schedule, on the guess that a flat
    # colour is chosen there; set once (0.5, x3), first run on the demo's slow seeds 4 and 7
    # (demo_trajectory_later50x3.md).
    "ti-average-later": {**TI_AVERAGE, "timestep_bias": "later",
                         "timestep_bias_portion": 0.5, "timestep_bias_multiplier": 3.0},
    # The same passes in half the steps, 8 pictures a step: a step took 1.55-1.8x (demo_trajectory_batch8.md).
    "ti-average-batch8": {**TI_AVERAGE, "batch_size": 8},
    # The vectors start from the text encoder's output for the init word (--init-strategy cross, Cross-Initialization,
    # Pang et al.), whose claim is fewer steps to the concept; not tuned (the demo's settings otherwise).
    "ti-average-cross": {**TI_AVERAGE, "init_strategy": "cross"},
    # Its own vectors for each quarter of the schedule (--time-stages 4); first run on the two runs ti-average misses
    # and two it learns (guided_objective_stages4_plain.md), where it learned the seed-0 heart.
    "ti-average-stages4": {**TI_AVERAGE, "time_stages": 4},
    # Twice ti-average's rate for fewer steps (500 against 800, so 2000 passes against 3200): the saved average
    # reached fidelity 0.8 by step 500 on 7 of the demo's seeds 0-7 (demo_trajectory_lr02.md); not tuned otherwise.
    "ti-average-lr02": {**TEXTUAL_INVERSION, "lr": 0.2, "ema_decay": 0.99},
    # Its own vectors for each of the UNet's cross-attention layers (--per-layer, P+), every set learning from every
    # sample: vectors that change with the timestep lost the checkers whether their sets were learned apart
    # (ti-average-stages4) or shared (ti-average-stages4-shared), and one set misses the stripes; sets per layer let
    # the layers that draw the stripes want other vectors than those that draw colour. Not tuned.
    "ti-average-per-layer": {**TI_AVERAGE, "per_layer": True},
    # ti-average-per-layer with the stripes' bias (ti-average-noisiest's): a set per layer kept the checkers at the
    # uniform draw and missed the stripes, as one set does; with the bias one set learns the stripes and loses the
    # checkers, on the guess that it is one set's compromise between the layers that loses them. Not tuned.
    "ti-average-per-layer-noisiest": {**TI_AVERAGE, "per_layer": True, **STRIPES_BIAS},
    # ti-average-stages4 with the quarters' vectors as one shared set plus an offset each (--shared-vectors): at 6400
    # passes the quarters' own vectors learned the striped style without the stripes' bias but drew the checkered
    # concepts solid in 6-7 of 16 pictures, as if each quarter's set learned the checkers, chosen in the quieter
    # three quarters, from its own quarter's samples alone; the shared set learns from all of them. Not tuned.
    "ti-average-stages4-shared": {**TI_AVERAGE, "time_stages": 4, "shared_vectors": True},
    # The token learning through the up path's last cross-attention block only (--token-gradient finest; on
    # miniworld its two layers at 8x8): a backward pass that stops there. Not tuned (the demo's settings otherwise).
    "ti-average-finest": {**TI_AVERAGE, "token_gradient": "finest"},
    # The same through every up block's cross-attention (--token-gradient up), after finest lost half its runs.
    "ti-average-up": {**TI_AVERAGE, "token_gradient": "up"},
    # finest for the first half of the steps, then every layer: finest had learned the circle, heart and ring as
    # well or better and lost the triangle, square and cross, which every layer learned. Halfway set once, not tuned.
    "ti-average-finest-half": {**TI_AVERAGE, "token_gradient": "finest", "token_gradient_fraction": 0.5},
    # ti-average-later for the first 300 steps only, then uniform, in 500 steps (2000 passes): early in a run the
    # noisiest timesteps carry the gradient's direction, after 200 steps only its noise (gradient_noise.md), and
    # ti-average-later reached the targets in 2 of its 8 runs where ti-average reached 7. 300 chosen on the demo's
    # seeds 0-7 (200 and 300 tried, docs/demo.md); not tuned on this set.
    "ti-average-later300": {**TI_AVERAGE, "timestep_bias": "later",
                            "timestep_bias_portion": 0.5, "timestep_bias_multiplier": 3.0, "timestep_bias_steps": 300},
    # The noisiest quarter (t >= 750) drawn a tenth as often (3 % of the draws against 25 %): there the objective
    # rates vectors that hedge towards blue better than those that learned teal (loss_against_fidelity.md), so the
    # colour is left to the quieter timesteps that tell them apart. Set once from that diagnosis, not tuned.
    "ti-average-quieter": {**TI_AVERAGE, "timestep_bias": "later",
                           "timestep_bias_portion": 0.25, "timestep_bias_multiplier": 0.1},
    # ti-average with ti-cosine-later's bias (half the timesteps from t >= 900): on the model shipped since 2026-12-05
    # only the noisiest quarter's loss prefers a striped concept's words to the solid phrase (phrase_loss_*.md), and
    # ti-cosine-later learned the blue striped square on both seeds but kept little editability on the teal striped
    # triangle; the moving average is what kept it in ti-average. Set once from that, not tuned.
    "ti-average-noisiest": {**TI_AVERAGE, **STRIPES_BIAS},
    # The stripes' bias for the defaults' 800 steps, then 800 uniform ones (run at 6400 passes): the bias learns the
    # stripes and loses the checkers, one set drawn uniformly for as long keeps the checkers and misses the stripes;
    # on the guess that stripes once learned stay a place the uniform draw does not leave, and that it brings the
    # checkers back from wherever the bias left them. Set once from that, not tuned.
    "ti-average-noisiest-800": {**TI_AVERAGE, **STRIPES_BIAS, "timestep_bias_steps": 800},
    # ti-average-noisiest with its own vectors for each quarter of the schedule (--time-stages 4): the stripes are
    # chosen in the noisiest quarter and the checkers and colours in the quieter ones (phrase_loss_*.md), and one set
    # of vectors trained mostly where the stripes are chosen lost the checkers; with a set per quarter the noisiest
    # draws cannot move the others'. Set once from that, not tuned; it lost the checkered style all the same
    # (docs/subjects.md), as did ti-average-noisier below.
    "ti-average-stages4-noisiest": {**TI_AVERAGE, "time_stages": 4, **STRIPES_BIAS},
    # A milder bias for twice the steps (a quarter of the timesteps from the noisiest tenth, --timestep-bias-multiplier
    # 3, at 6400 passes): as many draws from t >= 900 as ti-average-noisiest makes at 3200 passes, which taught the
    # stripes, and more from the quieter timesteps than ti-average makes at 3200, where the checkers and the colours
    # are taught (phrase_loss_*.md). Set once from that count, not tuned.
    "ti-average-noisier": {**TI_AVERAGE, "timestep_bias": "later",
                           "timestep_bias_portion": 0.1, "timestep_bias_multiplier": 3.0},
    "ti-words": {**TEXTUAL_INVERSION, "init_token": "{words}"},
    "ti-words-spread": {**TEXTUAL_INVERSION, "init_token": "{words}", "spread_words": True},
    # ti-words-spread with the demo's settings (ti-average's): on the held-out yellow checkered heart, whose plain
    # words the base model draws at 1.00 / 1.00, every setting started from the init word learned it on 1 seed of 4;
    # started where the words are, does training keep it there? A diagnosis on that one concept, not tuned.
    "ti-average-words-spread": {**TI_AVERAGE, "init_token": "{words}", "spread_words": True},
    "lora": {"method": "lora", **MINIWORLD_SETTINGS["lora"]},
    # Adapters on the ResNet convolutions too (kohya's LoCon), for a shape attention alone did not learn.
    "lora-all": {"method": "lora", **MINIWORLD_SETTINGS["lora"], "lora_layers": "all"},
    # The same with the rate decaying to 0 (one budget per run): the unseen star's fidelity under lora-all swung from
    # 0.88 at 3200 passes to 0.44 at 12800 on one seed, as if a constant rate kept it wandering; set once, not tuned.
    "lora-all-cosine": {"method": "lora", **MINIWORLD_SETTINGS["lora"], "lora_layers": "all", "lr_scheduler": "cosine"},
    # The same with half the timesteps from t >= 900, where the shipped model chooses striped or checkered from the
    # noise and not from the word (docs/subjects.md, "Why the patterns fail"): a token cannot move that choice, adapters
    # on the UNet might. The bias is ti-cosine-later's, set once from that diagnosis, not tuned.
    "lora-all-cosine-later": {"method": "lora", **MINIWORLD_SETTINGS["lora"], "lora_layers": "all",
                              "lr_scheduler": "cosine", **STRIPES_BIAS},
    # LoRA's defaults on latents refined by decoder inversion: miniworld's VAE encodes a small star on grey or sand as
    # a dot (benchmarks/vae_shapes.py) that the decoder can draw as a star from a latent refined for 300 steps.
    "lora-all-cosine-refined": {"method": "lora", **MINIWORLD_SETTINGS["lora"], "lora_layers": "all",
                                "lr_scheduler": "cosine", "refine_latents": 300},
    # The same with DreamBooth's prior preservation (its class prompt, pictures and batch), for the editability
    # that lora-all lost on the patterned concepts; and pivotal tuning with those adapters.
    "lora-all-prior": {**DREAMBOOTH, "method": "lora", **MINIWORLD_SETTINGS["lora"], "lora_layers": "all"},
    "pivotal-all": {"method": "pivotal", **MINIWORLD_SETTINGS["pivotal"], **TEXTUAL_INVERSION, "lora_layers": "all"},
    "pivotal": {"method": "pivotal", **MINIWORLD_SETTINGS["pivotal"], **TEXTUAL_INVERSION},
    # Pivotal tuning with the stripes' bias (ti-average-noisiest's): on the teal striped triangle that bias gave the
    # token the stripes (0.94 fidelity on seed 0) but not the editability, which pivotal's LoRA might carry. Set from
    # those two runs, not tuned.
    "pivotal-noisiest": {"method": "pivotal", **MINIWORLD_SETTINGS["pivotal"], **TEXTUAL_INVERSION, **STRIPES_BIAS},
    "dreambooth": DREAMBOOTH,
    # 4x the rate, for what only the UNet can learn (a new shape; patterns the conditioning ceiling cannot draw).
    "dreambooth-2e-4": {**DREAMBOOTH, "lr": 2e-4},
    "dreambooth-text-encoder": {**DREAMBOOTH, "train_text_encoder": True},
    # DreamBooth with the stripes' bias, and on refined latents: the two changes that gave LoRA's defaults a seed of
    # the teal striped triangle and the stars, on the method that trains the whole UNet (more than LoRA's rank 8 can
    # change). Set from LoRA's runs, not tuned.
    "dreambooth-later": {**DREAMBOOTH, **STRIPES_BIAS},
    "dreambooth-refined": {**DREAMBOOTH, "refine_latents": 300},
    # Both: dreambooth-later's misses on the teal striped triangle are blobs where the pictures ask for it small (the
    # navy and grey ones), and the VAE keeps a small triangle on grey in 75 % of round trips (vae_shapes_*.md).
    "dreambooth-later-refined": {**DREAMBOOTH, **STRIPES_BIAS, "refine_latents": 300},
    # dreambooth-later with the rate decaying to 0 (one budget per run): on the triangle's seed 0 its fidelity fell
    # from 0.81 at 6400 passes to 0.62 at 12800 at a constant rate, as lora-all's did on the star before its cosine.
    "dreambooth-later-cosine": {**DREAMBOOTH, **STRIPES_BIAS, "lr_scheduler": "cosine"},
}

# The method each variant is compared with run for run (the rest: plain textual inversion).
PAIRED_WITH = {"ti-cosine-later": "ti-cosine", "ti-average-later": "ti-average", "ti-average-batch8": "ti-average",
               "ti-average-cross": "ti-average", "ti-average-stages4": "ti-average",
               "ti-average-stages4-shared": "ti-average-stages4", "ti-average-per-layer": "ti-average",
               "ti-average-per-layer-noisiest": "ti-average-noisiest", "ti-average-lr02": "ti-average",
               "ti-average-finest": "ti-average", "ti-average-up": "ti-average",
               "ti-average-finest-half": "ti-average", "ti-average-later300": "ti-average",
               "ti-average-quieter": "ti-average", "ti-average-noisiest": "ti-average",
               "ti-average-noisiest-800": "ti-average", "ti-average-words-spread": "ti-average",
               "ti-average-stages4-noisiest": "ti-average-noisiest", "ti-average-noisier": "ti-average",
               "ti-former-defaults": "ti-average", "pivotal-former-defaults": "pivotal", "lora-all-cosine": "lora-all",
               "lora-all-cosine-later": "lora-all-cosine", "pivotal-noisiest": "pivotal",
               "lora-all-cosine-refined": "lora-all-cosine", "dreambooth-later": "dreambooth",
               "dreambooth-refined": "dreambooth", "dreambooth-later-refined": "dreambooth-later",
               "dreambooth-later-cosine": "dreambooth-later"}
# A variant compared at a budget of its own against the other's at the paired table's (fewer steps for the same end).
PAIRED_BUDGET = {"ti-average-lr02": 2000, "ti-average-later300": 2000, "ti-former-defaults": 500,
                 "pivotal-former-defaults": 500}


def done(results: Path) -> list[dict]:
    return [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []


def is_ceiling(row: dict, start_from: str = "init-word") -> bool:
    """Whether `row` is a conditioning ceiling (benchmarks/conditioning_ceiling.py) started from the init word (its
    rows carry no "start") or, with start_from="words", from the concept's plain words."""
    return row["condition"] == "ceiling" and ("start" in row) == (start_from == "words")


def record(results: Path, row: dict) -> None:
    with results.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def sweep_values(method: str, spec, folder: Path, run: Path, seed: int, steps: int, threads: int,
                 model: str = "miniworld") -> dict:
    """The TrainConfig values of `method`'s run on concept `spec` (pictures in `folder`). ti-words-spread's
    "spread_words" is left in for the caller, which writes its --init-embedding file from the pipeline."""
    settings, _ = run_settings(METHODS[method], spec)
    return train_values(settings, spec, folder, run, steps, model=model, seed=seed, threads=threads)


def train_and_score(method: str, name: str, kind: str, folder: Path, spec, seed: int, budgets: list[int],
                    wanted: list[int], num_images: int, run: Path, threads: int,
                    model: str = "miniworld") -> list[dict]:
    """Train `method` on `model` to the largest budget, scoring the live pipeline at each wanted budget; the result
    rows."""
    from textual_inversion import TrainConfig, train
    from textual_inversion.evaluate import evaluate_concept
    from textual_inversion.models import load_pipeline

    _, passes_per_step = run_settings(METHODS[method], spec)
    if any(b % passes_per_step for b in budgets):
        raise SystemExit(f"--passes: {method} makes {passes_per_step} UNet passes a step; each budget must be a "
                         "multiple of that")
    pipe = load_pipeline(model)
    values = sweep_values(method, spec, folder, run, seed, max(budgets) // passes_per_step, threads, model)
    if values.pop("spread_words", False):
        init_file = run.with_name(run.name + "-init.safetensors")  # beside the run folder, which --overwrite empties
        values["init_embedding"] = str(write_spread_init(pipe, spec.token, values.pop("init_token"),
                                                         values["vectors"], init_file))
    # With a moving average the run's result (left in the pipeline by train) exists only after its last step.
    averaged = bool(values.get("ema_decay"))
    scored, started, evaluating = [], time.monotonic(), 0.0

    def score(step: int) -> None:
        nonlocal evaluating
        budget = step * passes_per_step
        if budget not in wanted:
            return
        trained = time.monotonic() - started - evaluating
        began = time.monotonic()
        report = evaluate_concept(pipe, spec, run / f"evaluation-{budget}", num_images, conditions=("concept",))
        evaluating += time.monotonic() - began
        scored.append({"concept": name, "kind": kind, "condition": method, "seed": seed, "passes": budget,
                       "fidelity": report["fidelity"], "editability": report["editability"],
                       "fidelity_reads": fidelity_reads(report), "train_seconds": trained,
                       "load": os.getloadavg()[0]})

    def score_during_training(step: int, _loss: float) -> None:
        # With a constant learning rate the first N steps of a long run are a run of N steps, so the pipeline
        # (which holds what is learned so far) is scored as that budget's run.
        if not averaged:
            score(step)

    # Not lenient: an option a method lacks (a misspelt one in METHODS) stops the run instead of being dropped.
    result = train(TrainConfig.from_values(values), pipe, on_step=score_during_training)
    if averaged:
        score(result.steps)
    size = output_bytes(result.outputs.values())
    return [{**row, "file_bytes": size} for row in scored]


def fidelity_reads(report: dict) -> dict[str, dict[str, int]]:
    """What the judge read on the fidelity prompts' images, for each defining attribute: {attribute: {value: images}}
    ({"pattern": {"striped": 11, "checkered": 5}}: which part of a concept a run misses, and as what)."""
    reads: dict[str, dict[str, int]] = {}
    for prompt in report["prompts"]:
        if prompt["condition"] == "concept" and prompt["kind"] == "fidelity":
            for predicted in prompt["predicted"]:
                for attribute in prompt["expected"]:
                    counts = reads.setdefault(attribute, {})
                    counts[predicted[attribute]] = counts.get(predicted[attribute], 0) + 1
    return reads


def misreads(reads: dict[str, dict[str, int]], attributes: dict[str, str]) -> str:
    """The wrong values among `fidelity_reads`, most frequent first: "pattern: striped 11; shape: circle 4"."""
    parts = []
    for attribute, counts in reads.items():
        wrong = sorted(((n, value) for value, n in counts.items() if value != attributes[attribute]), reverse=True)
        if wrong:
            parts.append(f"{attribute}: " + ", ".join(f"{value} {n}" for n, value in wrong))
    return "; ".join(parts) or "none"


def spread_words(tokenizer, embedding, words: str, num_vectors: int):
    """Starting vectors [num_vectors, dim] with the words' tokens in order, each repeated for its share:
    3 tokens over 6 vectors give t0 t0 t1 t1 t2 t2 (with more tokens than vectors, the tool's mean rule)."""
    from textual_inversion.tokens import initializer_embeddings

    ids = tokenizer.encode(words, add_special_tokens=False)
    if len(ids) >= num_vectors:
        return initializer_embeddings(tokenizer, embedding, words, num_vectors)
    return embedding.weight.detach().float()[[ids[i * len(ids) // num_vectors] for i in range(num_vectors)]].clone()


def write_spread_init(pipe, token: str, words: str, num_vectors: int, path: Path) -> Path:
    """`spread_words` written as an embedding file for --init-embedding."""
    from textual_inversion.embedding import Embedding
    from textual_inversion.formats import SINGLE_ENCODER, write_embedding

    vectors = spread_words(pipe.tokenizer, pipe.text_encoder.get_input_embeddings(), words, num_vectors)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_embedding(Embedding(token, {SINGLE_ENCODER: vectors}, {"init_words": words}), path)


def run_folder(workdir: Path, concept: str, method: str, seed: int, passes: int) -> Path:
    """Where a run of `method` trained to `passes` UNet passes keeps its evaluations: one folder per budget, because
    train's --overwrite empties a run's folder, and a method whose result exists only after its last step (a moving
    average, a decaying rate) is trained again for each budget."""
    return workdir / concept / f"{'ti' if method == 'textual-inversion' else method}-{passes}-seed{seed}"


def sweep(names: list[str], seeds: list[int], budgets: list[int], num_images: int, workdir: Path, results: Path,
          threads: int, method: str = "textual-inversion") -> None:
    from textual_inversion.evaluate import evaluate_concept
    from textual_inversion.models import load_pipeline

    for name in names:
        # A bundled concept (examples/concepts/) by its folder's name: a check on a concept outside the set.
        folder, spec = find_concept(name, workdir / "concepts")
        kind = concept_kind(name)
        own = [r for r in done(results) if r.get("concept") == name]  # "timing" records name no concept
        if not any(r["condition"] == "baselines" for r in own):
            report = evaluate_concept(load_pipeline("miniworld"), spec, workdir / name / "baselines", num_images,
                                      conditions=("init_word", "words"))
            for condition, scores in report["baselines"].items():
                record(results, {"concept": name, "kind": kind, "condition": "baselines", "baseline": condition,
                                 **scores})
        for seed in seeds:
            wanted = [b for b in budgets if not any(r["condition"] == method and r["seed"] == seed and r["passes"] == b
                                                    for r in own)]
            if wanted:
                run = run_folder(workdir, name, method, seed, max(budgets))
                for row in train_and_score(method, name, kind, folder, spec, seed, budgets, wanted, num_images, run,
                                           threads):
                    record(results, row)


def train_options(method: str) -> str:
    """`method`'s TrainConfig values as `train` options, as sweep_values gives them (the former defaults filled in),
    with the concept's own words as <placeholders> and the steps left out (a budget sets them)."""
    from types import SimpleNamespace

    settings, _ = run_settings(METHODS[method], SimpleNamespace(init_word="<init word>"))
    values = with_former_defaults(with_init_token(settings, "<init word>", "<plain words>"))
    values = {"method": values.pop("method", "textual-inversion"), **values}
    options = []
    for name, value in values.items():
        if name == "steps" or value is False:
            continue
        if name == "spread_words":  # written by the sweep as an --init-embedding file (write_spread_init)
            options.append("--init-embedding <the plain words' tokens spread over the vectors>")
            continue
        flag = "--" + name.replace("_", "-")
        options.append(flag if value is True else f"{flag} {shlex.quote(str(value))}")
    return " ".join(options)


def methods_in(rows: list[dict]) -> list[str]:
    return [method for method in METHODS if any(r["condition"] == method for r in rows)]


def tables(rows: list[dict], budgets: list[int], seeds: list[int]) -> list[str]:
    """One row per concept and method: fidelity / editability at each budget, the concept's baselines on its first.
    A cell holding fewer seeds than `seeds` names the seed of each entry."""
    names = list(dict.fromkeys(r["concept"] for r in rows))
    lines = ["| kind | concept | init word | plain words | conditioning ceiling | method | "
             + " | ".join(f"{b} passes" for b in budgets) + " |", "|---|---|---|---|---|---|" + "---|" * len(budgets)]

    def cell(scores: list[dict]) -> str:
        named = len(scores) < len(seeds)
        return ", ".join((f"seed {r['seed']}: " if named else "") + f"{r['fidelity']:.2f} / {r['editability']:.2f}"
                         for r in sorted(scores, key=lambda r: r["seed"])) or "-"

    for name in names:
        own = [r for r in rows if r["concept"] == name]
        base = {r["baseline"]: r for r in own if r["condition"] == "baselines"}
        ceiling = ", ".join(f"{r['fidelity']:.2f}" for r in sorted(
            (r for r in own if is_ceiling(r)), key=lambda r: r["seed"])) or "-"
        first = [own[0]["kind"], name] + [f"{base[c]['fidelity']:.2f} / {base[c]['editability']:.2f}" if c in base
                                          else "-" for c in ("init_word", "words")] + [ceiling]
        for index, method in enumerate(m for m in methods_in(rows) if any(r["condition"] == m for r in own)):
            cells = [cell([r for r in own if r["condition"] == method and r["passes"] == b]) for b in budgets]
            lines.append("| " + " | ".join((first if index == 0 else [""] * len(first)) + [method] + cells) + " |")
    return lines


def at_target(row: dict) -> bool:
    """The demo's targets: fidelity >= 0.8 with editability >= 0.7."""
    return row["fidelity"] >= 0.8 and row["editability"] >= 0.7


def summary(rows: list[dict], budgets: list[int]) -> list[str]:
    """Per method, kind and budget: how many runs reach the demo's targets (fidelity >= 0.8, editability >= 0.7)."""
    lines = ["| method | kind | " + " | ".join(f"{b} passes: runs at target, mean fidelity" for b in budgets) + " |",
             "|---|---|" + "---|" * len(budgets)]
    for method in methods_in(rows):
        for kind in dict.fromkeys(r["kind"] for r in rows):
            cells = []
            for budget in budgets:
                runs = [r for r in rows if r["kind"] == kind and r["condition"] == method and r["passes"] == budget]
                hit = sum(map(at_target, runs))
                mean = sum(r["fidelity"] for r in runs) / len(runs) if runs else float("nan")
                cells.append(f"{hit} of {len(runs)}, {mean:.2f}" if runs else "-")
            if any(c != "-" for c in cells):
                lines.append(f"| {method} | {kind} | " + " | ".join(cells) + " |")
    return lines


def is_textual_inversion(method: str) -> bool:
    """Whether sweep method `method` learns a token only (a file of a few KB), not the model."""
    return METHODS[method].get("method", "textual-inversion") == "textual-inversion"


def met_on_every_seed(runs: list[dict], method: str, budget: int, seeds: list[int]) -> bool | None:
    """Whether `method` at `budget` reached the demo's targets on every seed; None when a seed was not run."""
    by_seed = {r["seed"]: r for r in runs if r["condition"] == method and r["passes"] == budget}
    if not set(seeds) <= set(by_seed):
        return None
    return all(at_target(by_seed[seed]) for seed in seeds)


def goals(rows: list[dict], seeds: list[int]) -> list[str]:
    """Issue 20's goals per concept: which settings reach the demo's targets on every seed at one budget, for any
    method and for textual inversion alone, beside the conditioning ceiling's best check (at least 0.8: the UNet
    can draw the concept when its conditioning is optimised directly, from the init word or from the plain words)."""
    lines = ["| kind | concept | conditioning ceiling, best check (from the init word; from the plain words where "
             "run) | runs at the targets, any setting (a run scored at several budgets counted at each) | settings at "
             f"the targets on every seed ({', '.join(map(str, seeds))}) | of them textual inversion |",
             "|---|---|---|---|---|---|"]
    names = list(dict.fromkeys(r["concept"] for r in rows))
    met, drawn, met_by_token = 0, 0, 0
    # Each textual-inversion setting on the concepts the ceiling draws: met on every seed (None: a seed not run).
    token_settings: dict[tuple[str, int], list[bool | None]] = {}
    for name in names:
        own = [r for r in rows if r["concept"] == name]
        # The ceiling from either start: on a model whose plain words draw the concept, the optimisation from the
        # init word alone can stop short of what the UNet draws.
        peaks = {label: [r["peak"] for r in sorted(own, key=lambda r: r.get("seed", 0)) if is_ceiling(r, start)]
                 for label, start in (("init word", "init-word"), ("plain words", "words"))}
        every_peak = peaks["init word"] + peaks["plain words"]
        runs = [r for r in own if r["condition"] in METHODS]
        settings = {(method, budget): met_on_every_seed(runs, method, budget, seeds) for method in methods_in(runs)
                    for budget in sorted({r["passes"] for r in runs if r["condition"] == method})}
        every_seed = [setting for setting, hit in settings.items() if hit]
        tokens = [(method, budget) for method, budget in every_seed if is_textual_inversion(method)]
        ceiling_draws = bool(every_peak) and max(every_peak) >= 0.8
        if ceiling_draws:
            for (method, budget), hit in settings.items():
                if is_textual_inversion(method):
                    token_settings.setdefault((method, budget), []).append(hit)
        met += bool(every_seed)
        drawn += ceiling_draws
        met_by_token += ceiling_draws and bool(tokens)

        def listed(chosen: list[tuple[str, int]]) -> str:
            return ", ".join(f"{method} {budget}" for method, budget in chosen) or "none"

        ceiling = "; ".join(f"{label}: " * bool(peaks["plain words"]) + ", ".join(f"{p:.2f}" for p in found)
                            for label, found in peaks.items() if found) or "-"
        lines.append(f"| {own[0]['kind']} | {name} | {ceiling} | "
                     f"{sum(map(at_target, runs))} of {len(runs)} | {listed(every_seed)} | {listed(tokens)} |")
    complete = {setting: sum(hits) for setting, hits in token_settings.items()
                if len(hits) == drawn and None not in hits}
    lines += ["", f"Some setting at the targets on every seed: {met} of {len(names)} concepts. Of the {drawn} "
              f"whose conditioning ceiling reaches 0.8 at its best check from either start, a textual-inversion "
              "setting at the targets on "
              f"every seed: {met_by_token}. Each textual-inversion setting run on all {drawn} of those on every seed, "
              "with how many of them it met: " + ", ".join(
                  f"{m} {b} {hits}" for (m, b), hits in sorted(complete.items(), key=lambda item: -item[1])) + "."]
    return lines


def paired(rows: list[dict], budget: int) -> list[str]:
    """Each method against the one it changes (PAIRED_WITH; plain textual inversion for the rest) on the runs both
    have (same concept, seed and budget)."""
    lines = [f"| method | against | runs paired ({budget} passes unless named) | its mean fidelity / editability | "
             "the other's on the same runs | at target: it / the other |", "|---|---|---|---|---|---|"]
    for method in methods_in(rows)[1:]:
        reference = PAIRED_WITH.get(method, "textual-inversion")
        own_budget = PAIRED_BUDGET.get(method, budget)
        other = {(r["concept"], r["seed"]): r for r in rows if r["condition"] == reference and r["passes"] == budget}
        own = [r for r in rows if r["condition"] == method and r["passes"] == own_budget
               and (r["concept"], r["seed"]) in other]
        if not own:
            continue
        base = [other[(r["concept"], r["seed"])] for r in own]

        def means(runs: list[dict]) -> str:
            return (f"{sum(r['fidelity'] for r in runs) / len(runs):.2f} / "
                    f"{sum(r['editability'] for r in runs) / len(runs):.2f}")

        def hits(runs: list[dict]) -> int:
            return sum(map(at_target, runs))

        named = f" at {own_budget} passes" if own_budget != budget else ""
        lines.append(f"| {method}{named} | {reference} | {len(own)} | {means(own)} | {means(base)} | "
                     f"{hits(own)} / {hits(base)} |")
    return lines


def plot(rows: list[dict], budgets: list[int], path: Path) -> None:
    """Fidelity against budget, one panel per method, one line per concept and seed, coloured by kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    colours = dict(zip(kinds, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    methods = methods_in(rows)
    columns = min(3, len(methods))
    lines_of = -(-len(methods) // columns)
    figure, panels = plt.subplots(lines_of, columns, figsize=(3.6 * columns + 1.8, 3.0 * lines_of), squeeze=False,
                                  sharex=True, sharey=True)
    for axes, method in zip(panels.flat, methods, strict=False):
        for concept, seed in sorted({(r["concept"], r["seed"]) for r in rows if r["condition"] == method}):
            points = sorted((r["passes"], r["fidelity"], r["kind"]) for r in rows if r["condition"] == method
                            and r["concept"] == concept and r["seed"] == seed and r["passes"] in budgets)
            if points:
                axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3,
                          color=colours[points[0][2]], alpha=0.6)
        axes.axhline(0.8, color="grey", linestyle=":", linewidth=1)
        axes.set(xscale="log", title=method, ylim=(-0.02, 1.02))
        axes.minorticks_off()  # the log axis's own minor labels would print over the budgets
        axes.set_xticks(budgets, [str(b) for b in budgets], fontsize=7)
    for axes in panels.flat[len(methods):]:
        axes.set_visible(False)
    for axes in panels[:, 0]:
        axes.set_ylabel("fidelity (judge)")
    for axes in panels[-1, :]:
        axes.set_xlabel("UNet passes")
    for kind in kinds:
        panels.flat[0].plot([], [], color=colours[kind], label=kind)
    figure.legend(fontsize=8, loc="upper right")
    figure.suptitle("The new concept set: fidelity by training budget, per method")
    figure.tight_layout(rect=(0, 0, 0.82, 0.95))
    figure.savefig(path, dpi=110)


def main() -> None:
    from .concept_set import CONCEPT_SET, EVERY_RENDERED_CONCEPT

    parser = argument_parser(__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--passes", type=int, nargs="+", default=[200, 800, 3200])
    parser.add_argument("--concepts", nargs="+", default=[c.name for _, c in CONCEPT_SET],
                        help="the set's concepts by name (or the held-out ones of concept_set, HELD_OUT_STRIPES, "
                             "HELD_OUT_STARS, HELD_OUT_COLOURS and HELD_OUT_CHECKERED, with a --results file of their "
                             "own), or a bundled one's folder in examples/concepts/ (e.g. star)")
    parser.add_argument("--num-images", type=int, default=4, help="images per evaluation prompt")
    parser.add_argument("--workdir", default="runs/concept-sweep", help="the rendered concepts and each run's folder")
    parser.add_argument("--results", default=str(SWEEP_RESULTS), help="the rows measured so far (appended to)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report", action="store_true", help="write the tables from the results so far, train nothing")
    parser.add_argument("--method", choices=list(METHODS), default="textual-inversion",
                        help="a setting of METHODS (their options are listed at the end of the report)")
    args = parser.parse_args()
    from textual_inversion.models import use_threads

    use_threads(args.threads)
    budgets = sorted(args.passes)
    if any(b % BATCH for b in budgets):
        parser.error(f"--passes: each budget must be a multiple of {BATCH} (a step's UNet passes)")
    settings = METHODS[args.method]
    if (settings.get("lr_scheduler", "constant") != "constant" or settings.get("ema_decay")) and len(budgets) > 1 \
            and not args.report:
        parser.error(f"--passes: {args.method}'s learning rate decays over the run or its result is an average, so "
                     "only its last budget is a run of its own; pass one budget")
    results = Path(args.results)
    produced_by = command()
    if not args.report:
        measured_on_packaged_model(results)
        sweep(args.concepts, args.seeds, budgets, args.num_images, Path(args.workdir), results, args.threads,
              args.method)
        # The tables show everything measured on the set so far, not only this run's concepts and budgets (a run
        # on a few concepts would otherwise write a table of those few over the whole set's).
        recorded = [r for r in done(results) if "passes" in r]
        # (the held-out concepts have a results file of their own: their tables are written from it)
        measured = {r["concept"] for r in recorded}
        args.concepts = [c.name for _, c in EVERY_RENDERED_CONCEPT if c.name in measured]
        args.seeds = sorted({r["seed"] for r in recorded if "seed" in r})
        budgets = sorted({r["passes"] for r in recorded})
        produced_by = (f"python -m benchmarks.concept_sweep --report --seeds {' '.join(map(str, args.seeds))} "
                       f"--passes {' '.join(map(str, budgets))}` after `{produced_by}")
    everything = done(results)
    rows = [r for r in everything if r.get("concept") in args.concepts and
            (r.get("seed", args.seeds[0]) in args.seeds or r["condition"] == "ceiling")]
    # Rows rebuilt from the tables (recovered_from) keep scores only; their times live in "timing" records.
    timings = {r["method"]: r for r in everything if r["condition"] == "timing"}
    weights = next((r["weights"] for r in everything if r["condition"] == "weights"), "not named")
    loads = [r["load"] for r in rows if "load" in r] + [x for r in timings.values() for x in r["load"]]
    lines = [f"# Methods on the new concept set ({len({r['concept'] for r in rows})} concepts, seeds "
             f"{', '.join(map(str, args.seeds))}, CPU)", "",
             f"Produced by `{produced_by}`, on miniworld weights {weights} (the results file's first row). Each "
             "method's `train` options are in the table at the end (benchmarks/concept_sweep.py's METHODS says why "
             "each was tried); its steps are a budget's passes over the batch, class pictures included. Each cell "
             f"is fidelity / editability as the judge reads {args.num_images} images per prompt, one entry per seed "
             "in seed order (named where a cell lacks a seed). "
             "Baselines: the base model given the init word or the plain words instead of the token. Conditioning "
             "ceiling: the fidelity of pictures drawn from the whole conditioning optimised on the concept's "
             "pictures, with no text encoder (benchmarks/conditioning_ceiling.py --concept-set, 400 steps; what the "
             "UNet can draw at all).", "",
             *tables(rows, budgets, args.seeds), "",
             "Runs reaching the demo's targets (fidelity >= 0.8 and editability >= 0.7):",
             "", *summary(rows, budgets), "",
             "Issue 20's goals per concept (a setting is a method at one budget, as named in the tables above):", "",
             *goals(rows, args.seeds), "", *paired(rows, 3200 if 3200 in budgets else budgets[-1]), "",
             f"Training time at each method's largest budget and file size (load average {min(loads):.1f}-"
             f"{max(loads):.1f} on 2 cores while they ran; dreambooth's includes making its 20 class pictures):", "",
             "| method | passes | training seconds | file size |", "|---|---|---|---|"]
    for method in methods_in(rows):
        largest = max(r["passes"] for r in rows if r["condition"] == method)
        own = [r for r in rows if r["condition"] == method and r["passes"] == largest and "train_seconds" in r]
        if own:
            seconds = [r["train_seconds"] for r in own]
            size = human_size(max(r["file_bytes"] for r in own))
        elif method in timings and timings[method]["passes"] == largest:
            seconds, size = timings[method]["train_seconds"], timings[method]["file_size"]
        else:
            continue
        lines.append(f"| {method} | {largest} | {min(seconds):.0f}-{max(seconds):.0f} | {size} |")
    lines += ["", "Each method's options (`textual-inversion train` with these, the concept's pictures and token):", "",
              "| method | options |", "|---|---|",
              *(f"| {method} | `{train_options(method)}` |" for method in methods_in(rows))]
    # The tables beside their rows: a sweep on a scratch results file leaves the committed tables alone.
    print_and_write(lines, results.with_suffix(".md"))
    plot(rows, budgets, results.with_suffix(".png"))


if __name__ == "__main__":
    main()
