"""Can the frozen UNet draw a concept at all? Optimise its conditioning directly, with no text encoder.

Textual Inversion can only reach the conditionings that the text encoder outputs for some input
vectors. This script skips the encoder: it optimises the whole 77-token conditioning on the concept's
images with the same diffusion loss, then lets the judge read what the UNet draws from it. If this
ceiling is high and TI stays low, the text encoder is the bottleneck, not the UNet.

    python -m benchmarks.conditioning_ceiling [--concept hidden-colour] [--steps 400] [--start "a circle"]
    python -m benchmarks.conditioning_ceiling --concept-set [--seeds 0 1] [--start-from words]
        every concept of benchmarks/concept_set.py, starting from "a <init word>" (or from its plain words,
        "a blue striped square", recorded as a column of its own), written with textual
        inversion's best fidelity from benchmarks/concept_sweep.py's results (both kept in the
        packaged model's results file, concept_set.SWEEP_RESULTS) beside it, to a table named after
        that file (concept_sweep_<weights>_ceiling.md: each model's ceilings keep their own table)
"""

from __future__ import annotations

import collections
from pathlib import Path

import torch

from textual_inversion.miniworld.concepts import ConceptSpec

from .common import argument_parser, bundled_concept, command, print_and_write
from .concept_set import (
    SWEEP_RESULTS,
    concept_kind,
    find_concept,
    measured_on_packaged_model,
    write_concept_set,
)
from .concept_sweep import METHODS, done, is_ceiling, record

# The optimisation and its checks, as --steps, --every, --lr, --batch-size and --num-images default to.
SETTINGS = {"steps": 400, "every": 100, "lr": 0.02, "batch_size": 8, "num_images": 16}
# --timestep-bias later: half the timesteps from the noisiest tenth, as concept_sweep's ti-cosine-later trains the
# token, so that a ceiling can be compared with a token trained where miniworld chooses the pattern.
LATER_BIAS = {"strategy": "later", "portion": 0.1, "multiplier": 9.0}


def ceiling(pipe, judge, folder: Path, attributes: dict[str, str], start: str, steps: int, every: int, lr: float,
            batch_size: int, num_images: int, seed: int, timestep_bias: dict | None = None
            ) -> list[tuple[int, float, float, dict]]:
    """Optimise the conditioning [1, 77, D] from `start`'s on the pictures in `folder`; every `every` steps the
    judge reads `num_images` pictures drawn from it: [(step, loss, share showing `attributes`, colours seen)].
    `timestep_bias`: data.timestep_bias's strategy, portion and multiplier (e.g. LATER_BIAS); None: uniform."""
    from diffusers import DDPMScheduler

    from textual_inversion.data import draw_biased_timesteps, list_images, load_rgb
    from textual_inversion.data import timestep_bias as bias_chances
    from textual_inversion.images import to_tensor
    from textual_inversion.miniworld.judge import predict
    from textual_inversion.objective import noised_and_target

    torch.manual_seed(seed)
    pixels = to_tensor([load_rgb(p) for p in list_images(folder)])
    pixels = torch.cat([pixels, pixels.flip(3)])
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        initial = pipe.encode_prompt(start, "cpu", 1, False)[0]
    conditioning = initial.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([conditioning], lr=lr)
    num_train_timesteps = noise_scheduler.config.num_train_timesteps
    chances = None if timestep_bias is None else bias_chances(num_train_timesteps, **timestep_bias)
    checks = []
    for step in range(1, steps + 1):
        rows = torch.randint(len(latents), (batch_size,))
        clean, noise = latents[rows], torch.randn_like(latents[rows])
        if chances is None:
            timesteps = torch.randint(0, num_train_timesteps, (batch_size,))
        else:
            timesteps = draw_biased_timesteps(batch_size, chances, torch.default_generator)
        noisy, target = noised_and_target(noise_scheduler, clean, noise, timesteps)
        prediction = pipe.unet(noisy, timesteps, conditioning.expand(batch_size, -1, -1)).sample
        loss = torch.nn.functional.mse_loss(prediction, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % every == 0:
            generators = [torch.Generator().manual_seed(100 + i) for i in range(num_images)]
            with torch.no_grad():
                images = pipe(prompt_embeds=conditioning.detach(), num_inference_steps=25, guidance_scale=4.0,
                              num_images_per_prompt=num_images, generator=generators).images
            predictions = predict(images, judge)
            hits = sum(all(p[k] == v for k, v in attributes.items()) for p in predictions) / len(predictions)
            checks.append((step, loss.item(), hits, dict(collections.Counter(p["colour"] for p in predictions))))
    return checks


def best_textual_inversion(results: Path) -> dict[str, tuple[float, str]]:
    """{concept: (the best fidelity any textual-inversion run of the concept sweep reached, any variant, budget or
    seed; the variant)}. The variants are concept_sweep's methods that train only the token (no "method" key)."""
    variants = {name for name, settings in METHODS.items() if "method" not in settings}
    best: dict[str, tuple[float, str]] = {}
    for row in done(results):
        if row["condition"] in variants and row["fidelity"] > best.get(row["concept"], (-1.0, ""))[0]:
            best[row["concept"]] = (row["fidelity"], row["condition"])
    return best


def concept_set_table(args, pipe, judge) -> None:
    """Run the ceiling on every concept (or --concepts) not yet in the sweep's results for this start, seed by seed,
    then write the table."""
    results = measured_on_packaged_model(Path(args.results))
    concepts = concepts_named(args)
    for name, (kind, folder, spec) in concepts.items():
        if args.concepts and name not in args.concepts:
            continue
        start = f"a {spec.init_word}" if args.start_from == "init-word" else spec.words
        for seed in args.seeds:
            if any(row["concept"] == name and row["seed"] == seed for row in ceiling_rows(results, args.start_from)):
                continue
            checks = ceiling(pipe, judge, folder, spec.attributes, start, args.steps, args.every,
                             args.lr, args.batch_size, args.num_images, seed)
            print(name, seed, checks, flush=True)
            row = {"concept": name, "kind": kind, "condition": "ceiling", "seed": seed, "fidelity": checks[-1][2],
                   "peak": max(c[2] for c in checks), "steps": args.steps}
            record(results, row if args.start_from == "init-word" else {**row, "start": start})  # the sweep's table shows it too
    write_table(args, concepts, results)


def concepts_named(args) -> dict[str, tuple[str, Path, ConceptSpec]]:
    """The set's concepts, and any held-out one --concepts names: {name: (kind, folder, spec)}, rendered under
    --workdir/concepts."""
    folder = Path(args.workdir) / "concepts"
    concepts = write_concept_set(folder)
    for name in args.concepts or ():
        if name not in concepts:
            concepts[name] = (concept_kind(name), *find_concept(name, folder))
    return concepts


def ceiling_rows(results: Path, start_from: str = "init-word") -> list[dict]:
    """The ceiling rows that started from the init word (rows without a "start"), or from the plain words."""
    return [row for row in done(results) if is_ceiling(row, start_from)]


def verdict(peak: float, ti: float | None) -> str:
    """Which side fails, as far as the two measurements can tell."""
    if ti is None:
        return "-"
    if ti >= 0.8:
        return "neither"
    if peak >= 0.8:
        return "the text side: the UNet draws it, textual inversion does not reach it"
    caveat = "; textual inversion got further than the ceiling run, which is no upper bound here" if ti > peak else ""
    return f"the image side: neither reaches 0.8, this UNet may not draw it{caveat}"


def write_table(args, concepts: dict, results: Path) -> None:
    ti_best = best_textual_inversion(results)
    starts = {"init-word": ceiling_rows(results, "init-word"), "words": ceiling_rows(results, "words")}
    weights = next((r["weights"] for r in done(results) if r["condition"] == "weights"), "not named")
    lines = [f"# The conditioning ceiling on the new concept set ({args.steps} steps, lr {args.lr}, batch "
             f"{args.batch_size}, {args.num_images} images judged per check)", "",
             f"Produced by `{command()}` (the ceiling rows by `python -m benchmarks.conditioning_ceiling --concept-set "
             f"[--start-from words]`, recorded in the concept sweep's results, {results.name}), on miniworld weights "
             f"{weights} (that file's first row). The whole 77-token conditioning is "
             "optimised on the concept's pictures, starting from \"a <init word>\" or from the concept's plain words "
             "(\"a blue striped square\"); the judge reads pictures drawn from it every 100 steps (share showing "
             "every defining attribute). Textual inversion's best: the highest fidelity of any run in "
             f"benchmarks/results/{results.with_suffix('.md').name} that learns only the token (any variant, budget or seed; the variant "
             "in brackets). The ceiling is one optimisation from one "
             "start: where textual inversion gets further, it is no upper bound. The verdict takes the best check "
             "from either start.", "",
             "| kind | concept | from the init word: per seed, last check | best check | from the plain words: per "
             "seed, last check | best check | TI's best | which side fails |",
             "|---|---|---|---|---|---|---|---|"]
    for name, (kind, _, _) in concepts.items():
        cells, peaks = [], []
        for rows in starts.values():
            own = sorted((row for row in rows if row["concept"] == name), key=lambda row: row["seed"])
            cells += [", ".join(f"{row[key]:.2f}" for row in own) or "-" for key in ("fidelity", "peak")]
            peaks += [row["peak"] for row in own]
        if not peaks:
            continue
        ti, variant = ti_best.get(name, (None, ""))
        best = "-" if ti is None else f"{ti:.2f} ({variant})"
        lines.append(f"| {kind} | {name} | {' | '.join(cells)} | {best} | {verdict(max(peaks), ti)} |")
    print_and_write(lines, ceiling_table(results))


def ceiling_table(results: Path) -> Path:
    """Where the table of the ceilings in sweep results file `results` goes: beside it, named after it."""
    return results.with_name(f"{results.stem}_ceiling.md")


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--concept", default="hidden-colour")
    parser.add_argument("--concept-set", action="store_true", help="every concept of benchmarks/concept_set.py")
    parser.add_argument("--workdir", default="runs/concept-sweep", help="with --concept-set: where the concepts are rendered")
    parser.add_argument("--results", default=str(SWEEP_RESULTS), help="with --concept-set: the concept sweep's rows")
    parser.add_argument("--start", default="a circle", help="prompt whose conditioning the optimisation starts from")
    parser.add_argument("--start-from", choices=("init-word", "words"), default="init-word",
                        help="with --concept-set: start from \"a <init word>\" or from the concept's plain words")
    parser.add_argument("--concepts", nargs="*", help="with --concept-set: only these concepts (a held-out one of "
                        "concept_set by name, with a --results file of its own)")
    parser.add_argument("--model", default="miniworld", help="the base model (another miniworld build's folder: "
                        "give its own --results file)")
    parser.add_argument("--steps", type=int, default=SETTINGS["steps"])
    parser.add_argument("--every", type=int, default=SETTINGS["every"], help="judge the images every N steps")
    parser.add_argument("--lr", type=float, default=SETTINGS["lr"])
    parser.add_argument("--batch-size", type=int, default=SETTINGS["batch_size"])
    parser.add_argument("--num-images", type=int, default=SETTINGS["num_images"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report", action="store_true", help="with --concept-set: write the table from the results")
    args = parser.parse_args()
    if args.concept_set and args.report:
        write_table(args, concepts_named(args), Path(args.results))
        return

    from textual_inversion.miniworld.judge import load_judge
    from textual_inversion.models import load_pipeline

    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    pipe.unet.requires_grad_(False)
    judge = load_judge()
    if args.concept_set:
        concept_set_table(args, pipe, judge)
        return
    folder, spec = bundled_concept(args.concept)
    print(f"{spec.token}: judge's hits on {sorted(spec.attributes.items())}, {args.num_images} images per check")
    for step, loss, hits, colours in ceiling(pipe, judge, folder, spec.attributes, args.start, args.steps, args.every,
                                             args.lr, args.batch_size, args.num_images, args.seeds[0]):
        print(f"step {step}: loss {loss:.4f}, concept shown in {hits:.2f} of the images; colours {colours}", flush=True)


if __name__ == "__main__":
    main()
