"""HyperDreamBooth on held-out miniworld identities: prediction, prediction + fast fine-tune, LoRA DreamBooth.

For each held-out identity (never in the hypernetwork's training set), from ONE render:
  (a) the hypernetwork's prediction alone (a rank-1 LoRA),
  (b) the prediction + the rank-relaxed fast fine-tune (--fast-steps),
  (c) LoRA DreamBooth from scratch with the same step count as (b) (about equal wall time),
  (d) LoRA DreamBooth to convergence (--converge-steps),
plus the plain-words description as a reference. Each is scored by evaluate.py's judge (fidelity and
editability), with its wall time. Results per identity are kept in --workdir, so a rerun resumes.

    python -m benchmarks.hyperdreambooth [--fast-steps 40] [--converge-steps 600] [--lr 3e-3] [--fast-lr 3e-3] [--num-images 4]

With `--extra-identities 16` it also measures 16 more unseen identities. The bundled hypernetwork was trained
without them (`python -m textual_inversion.builds.hypernetwork.train --validation 32`); for another one, pass
`--hypernetwork <folder>`: it must have withheld them too.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from .common import RESULTS_DIR, argument_parser, command, print_and_write, with_former_defaults

RESULTS = RESULTS_DIR / "hyperdreambooth.md"
CONDITIONS = ("prediction", "prediction+fine-tune", "lora-equal-time", "lora-converged", "words")
LABELS = {"prediction": "(a) prediction only", "prediction+fine-tune": "(b) prediction + fast fine-tune",
          "lora-equal-time": "(c) LoRA DreamBooth, same steps as (b)", "lora-converged": "(d) LoRA DreamBooth to convergence",
          "words": "reference: plain words, no training"}


def run_condition(condition: str, identity, image_dir: Path, out: Path, *, hypernetwork: str | None, steps: int,
                  lr: float, rank: int, num_images: int, warmup: int = 0, edits: bool = True) -> dict:
    """Make one condition's LoRA in `out` (timed: `steps` steps at `lr`, the first `warmup` ramping up),
    then score it with the judge."""
    from textual_inversion import TrainConfig, train
    from textual_inversion.concepts import load_concepts
    from textual_inversion.data import list_images, load_rgb
    from textual_inversion.evaluate import evaluate_concept
    from textual_inversion.methods.hypernetwork import write_prediction
    from textual_inversion.models import load_pipeline
    from textual_inversion.outputs import LORA

    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline("miniworld")
    lora, seconds, done_steps = None, 0.0, 0
    common = dict(model="miniworld", images=str(image_dir), token=identity.spec().token, batch_size=4, rank=rank,
                  steps=steps, lr=lr, lr_warmup_steps=warmup, lr_scheduler="constant_with_warmup" if warmup else "constant",
                  checkpoint_every=0, overwrite=True, device="cpu", seed=0, output_dir=str(out / "run"))
    started, cpu_started = time.monotonic(), time.process_time()
    if condition == "prediction":
        images = [load_rgb(p) for p in list_images(image_dir)]
        lora = write_prediction(pipe, images, hypernetwork, out)
    elif condition in ("prediction+fine-tune", "lora-equal-time", "lora-converged"):
        method = "hyperdreambooth" if condition == "prediction+fine-tune" else "lora"
        if method == "hyperdreambooth":
            common["hypernetwork"] = hypernetwork
        result = train(TrainConfig.from_values(with_former_defaults(dict(method=method, **common))), pipe=pipe)
        lora, done_steps = result.outputs[LORA], result.steps
    seconds, cpu_seconds = time.monotonic() - started, time.process_time() - cpu_started
    pipe = load_pipeline("miniworld")
    spec = identity.spec()
    if lora is not None:
        load_concepts(pipe, [str(lora)])
    report = evaluate_concept(pipe, spec, out / "evaluation", num_images=num_images, edits=edits,
                              conditions=("words",) if condition == "words" else ("concept",))
    scores = report["baselines"]["words"] if condition == "words" else report
    return {"identity": identity.name, "condition": condition, "fidelity": scores["fidelity"],
            "editability": scores["editability"], "seconds": seconds if lora is not None else None,
            "cpu_seconds": cpu_seconds if lora is not None else None, "steps": done_steps,
            "lora_bytes": lora.stat().st_size if lora is not None else None}


def hypernetwork_summary(folder: str | None) -> tuple[Path, dict]:
    """(the hypernetwork's folder, default the bundled one; its training.json, which names the identities it
    withheld under "validation", or {} where it has none)."""
    from textual_inversion.builds.hypernetwork.train import read_training_summary
    from textual_inversion.miniworld import HYPERNETWORK_DIR

    return Path(folder or HYPERNETWORK_DIR), read_training_summary(folder)


def weight_predictability(dataset: Path) -> tuple[int, float] | None:
    """Leave-one-out R^2 of ridge regression from an identity's true shape/colour/pattern to its LiDB weights.

    An upper-bound check on the weight-space loss: if even the ground-truth attributes cannot predict the
    pre-optimised weights, their differences are mostly optimisation noise, not identity.
    """
    from textual_inversion.builds.hypernetwork.identities import all_identities
    from textual_inversion.methods.lidb_file import read_lidb
    from textual_inversion.methods.lidb_layers import canonical_factors
    from textual_inversion.outputs import LIDB, OUTPUT_FILES

    by_name = {identity.name: identity for identity in all_identities()}
    features, fits = [], []
    for path in sorted(Path(dataset).glob(f"*/run/{OUTPUT_FILES[LIDB]}")):
        features.append(by_name[path.parent.parent.name].one_hot())
        fits.append(read_lidb(path)[0])
    if len(fits) < 3:
        return None
    targets = [torch.cat([torch.cat(pair) for pair in fit.values()]) for fit in canonical_factors(fits)]  # as trained
    x, y = torch.tensor(features), torch.stack(targets)
    y = (y - y.mean(0)) / y.std(0).clamp_min(1e-8)
    error = baseline = 0.0
    for k in range(len(x)):
        keep = torch.arange(len(x)) != k
        solution = torch.linalg.solve(x[keep].T @ x[keep] + torch.eye(x.shape[1]), x[keep].T @ y[keep])
        error += (x[k] @ solution - y[k]).square().mean().item()
        baseline += (y[keep].mean(0) - y[k]).square().mean().item()
    return len(x), 1 - error / baseline


def attribute_hits(workdir: Path, identities: list) -> dict[str, dict[str, float]]:
    """Per condition, the fraction of fidelity images whose shape, colour, pattern each match the identity."""
    hits = {}
    for condition in CONDITIONS:
        found = {"shape": [], "colour": [], "pattern": []}
        for identity in identities:
            path = workdir / identity.name / condition / "evaluation" / "evaluation.json"
            if not path.is_file():
                continue
            for record in json.loads(path.read_text())["prompts"]:
                if record["kind"] == "fidelity":
                    for seen in record["predicted"]:
                        for attribute, values in found.items():
                            values.append(seen[attribute] == record["expected"][attribute])
        if found["shape"]:
            hits[condition] = {attribute: mean(values) for attribute, values in found.items()}
    return hits


def mean(values: list) -> float:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else float("nan")


def summary_lines(rows: list[dict]) -> list[str]:
    """The mean of each condition over `rows`, and the goal: (b) within 0.05 fidelity of (d) at >= 10x less time."""
    by_condition = {c: [r for r in rows if r["condition"] == c] for c in CONDITIONS}
    summary = {c: {k: mean([r.get(k) for r in rs]) for k in ("fidelity", "editability", "seconds", "cpu_seconds")}
               for c, rs in by_condition.items() if rs}
    lines = ["| condition | fidelity | editability | CPU time | wall time |", "|---|---|---|---|---|"]
    for condition, values in summary.items():
        times = " | ".join("-" if values[k] != values[k] else f"{values[k]:.1f} s" for k in ("cpu_seconds", "seconds"))
        lines.append(f"| {LABELS[condition]} | {values['fidelity']:.2f} | {values['editability']:.2f} | {times} |")
    if "prediction+fine-tune" in summary and "lora-converged" in summary:
        fast, full = summary["prediction+fine-tune"], summary["lora-converged"]
        gap = full["fidelity"] - fast["fidelity"]
        speedup = full["cpu_seconds"] / fast["cpu_seconds"]
        met = gap <= 0.05 and speedup >= 10
        fast_by = {r["identity"]: r["fidelity"] for r in by_condition["prediction+fine-tune"]}
        gaps = [r["fidelity"] - fast_by[r["identity"]] for r in by_condition["lora-converged"] if r["identity"] in fast_by]
        spread = (f" (paired standard error over {len(gaps)} identities: {statistics.stdev(gaps) / len(gaps) ** 0.5:.3f})"
                  if len(gaps) > 1 else "")
        lines += ["", f"Goal: (b) within 0.05 fidelity of (d) at >= 10x less time. Measured: (d) - (b) = {gap:+.3f} "
                  f"fidelity{spread}, (d) takes {speedup:.1f}x the CPU time of (b): goal {'met' if met else 'NOT met'}."]
    return lines


def table_lines(rows: list[dict], args, identities: list) -> list[str]:
    from textual_inversion.builds.hypernetwork.identities import TUNING

    extra = ""
    if args.extra_identities:
        extra = (f" The first {args.identities} are the fixed held-out set; the other {args.extra_identities} are training "
                 "identities this hypernetwork was trained without (`builds.hypernetwork.train --validation "
                 f"{args.extra_identities + TUNING}`), none of them among those that tuned the fast fine-tune "
                 "(hyperdreambooth_tune.md).")
    lines = [f"# HyperDreamBooth on {len(identities)} held-out miniworld identities (CPU, 1 thread)", "",
             f"Produced by `{command()}`. Each identity is learned from ONE render; the held-out identities are "
             f"never in the hypernetwork's training set.{extra} Fidelity: images of the plain prompts showing the identity's "
             "shape, colour and pattern; editability: background/size edits honoured with the identity kept "
             f"(judge-scored, {args.num_images} images per prompt). Time of making the weights (prediction: loading "
             "the hypernetwork and predicting; training: the `train` call, data encoding included) as CPU time of "
             "the one-thread process, which other jobs on the shared 2-core machine hardly change, and as wall "
             "time, which they do.", "", f"## Mean over identities ({len(identities)})", ""]
    lines += summary_lines(rows)
    if args.extra_identities:
        first = {identity.name for identity in identities[:args.identities]}
        lines += ["", f"## Mean over the fixed held-out set only ({len(first)})", ""]
        lines += summary_lines([row for row in rows if row["identity"] in first])
    predictability = weight_predictability(Path(args.dataset)) if args.dataset else None
    if predictability is not None:
        count, r2 = predictability
        lines += ["", f"Weight-space check ({args.dataset}, {count} pre-optimised training identities): leave-one-out "
                  f"R^2 of a ridge regression from each identity's TRUE shape/colour/pattern to its LiDB weights: "
                  f"{r2:.2f} (1: the weights follow from the identity; <= 0: no better than the mean)."]
    hits = attribute_hits(Path(args.workdir), identities)
    if hits:
        from textual_inversion.miniworld.world import BASE_SHAPES, NAMED_COLOURS, PATTERNS

        chance = {"shape": 1 / len(BASE_SHAPES), "colour": 1 / len(NAMED_COLOURS), "pattern": 1 / len(PATTERNS)}
        lines += ["", "Does each condition carry the identity? Fraction of its fidelity images with the right shape / colour / "
                  "pattern (chance: " + " / ".join(f"{chance[a]:.2f}" for a in chance) + "): "
                  + "; ".join(f"{LABELS[c]} " + " / ".join(f"{v[a]:.2f}" for a in chance) for c, v in hits.items()) + "."]
    plateau = []
    for identity in identities:
        losses = Path(args.workdir) / identity.name / "lora-converged" / "run" / "loss.csv"
        if losses.is_file():
            values = [float(line.split(",")[1]) for line in losses.read_text().splitlines()[1:]]
            third = len(values) // 3
            plateau.append(f"{identity.name} {mean(values[third:2 * third]):.4f} -> {mean(values[2 * third:]):.4f}")
    if plateau:
        lines += ["", "Is (d) converged? Its mean training loss over the middle third of the steps -> the last third: "
                  + "; ".join(plateau) + "."]
    folder, info = hypernetwork_summary(args.hypernetwork)
    if info:
        pool = f" ({info['diffusion_identities']} in the diffusion loss)" if "diffusion_identities" in info else ""
        lines += ["", f"Hypernetwork ({folder.name}): {info['parameters']:,} parameters, trained on {info['identities']} "
                  f"pre-optimised identities{pool} for {info['steps']} steps (batch {info['batch_size']}, lr {info['lr']}, {info['iterations']} "
                  f"refinement iterations, diffusion loss weight {info['diffusion_weight']}) in {info['seconds']} s; weight-space loss {info['first_weight_loss']:.3f} at the "
                  f"first step, {info['final_weight_loss']:.3f} over the last 50 (normalised units: 1 is the spread of "
                  f"the targets), diffusion loss {info['final_diffusion_loss'] or float('nan'):.4f}."]
    lines += ["", "## Per identity", "", "| identity | condition | fidelity | editability | CPU time | wall time | steps |",
              "|---|---|---|---|---|---|---|"]
    for row in rows:
        times = " | ".join("-" if row.get(k) is None else f"{row[k]:.1f} s" for k in ("cpu_seconds", "seconds"))
        lines.append(f"| {row['identity']} | {LABELS[row['condition']]} | {row['fidelity']:.2f} | "
                     f"{row['editability']:.2f} | {times} | {row['steps'] or '-'} |")
    return lines


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--hypernetwork", default=None, help="hypernetwork folder (default: the bundled one)")
    parser.add_argument("--identities", type=int, default=6, help="how many held-out identities")
    parser.add_argument("--extra-identities", type=int, default=0,
                        help="also these many unseen, untuned identities (needs a hypernetwork trained without them)")
    parser.add_argument("--fast-steps", type=int, default=40)
    parser.add_argument("--converge-steps", type=int, default=600)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3, help="LoRA DreamBooth's, for (c) and (d)")
    parser.add_argument("--fast-lr", type=float, default=None, help="the fast fine-tune's, for (b) (default: --lr)")
    parser.add_argument("--fast-warmup", type=int, default=0, help="the fast fine-tune's learning-rate warm-up steps")
    parser.add_argument("--num-images", type=int, default=4, help="images per evaluation prompt")
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    parser.add_argument("--workdir", default="runs/benchmark-hyperdreambooth")
    parser.add_argument("--dataset", default="runs/hyper-dataset", help="pre-optimisation output, for the weight check")
    parser.add_argument("--results", default=str(RESULTS), help="where the table is written")
    args = parser.parse_args()
    args.fast_lr = args.lr if args.fast_lr is None else args.fast_lr
    torch.set_num_threads(1)  # a shared machine; and one thread makes times comparable
    import matplotlib.pyplot  # noqa: F401  (the first run's loss plot would pay this seconds-long import)

    from textual_inversion.builds.hypernetwork.identities import (
        TUNING,
        extra_held_out,
        held_out,
        write_images,
    )

    identities = held_out()[:args.identities] + extra_held_out(args.extra_identities)
    folder, info = hypernetwork_summary(args.hypernetwork)
    unseen = set(info.get("validation", []))
    predicts = {"prediction", "prediction+fine-tune"} & set(args.conditions)  # the rest never use the hypernetwork
    if predicts and any(identity.name not in unseen for identity in extra_held_out(args.extra_identities)):
        raise SystemExit(f"error: --extra-identities {args.extra_identities}: the hypernetwork in {folder} was trained on "
                         f"them; train one without them: python -m textual_inversion.builds.hypernetwork.train --validation "
                         f"{TUNING + args.extra_identities} --output <folder>, and pass --hypernetwork <folder>")
    workdir = Path(args.workdir)
    rows = []
    for identity in identities:
        image_dir = write_images(identity, workdir / identity.name / "image", 1)
        for condition in args.conditions:
            done = workdir / identity.name / condition / "result.json"
            if done.is_file():
                rows.append(json.loads(done.read_text()))
                continue
            steps = {"prediction+fine-tune": args.fast_steps, "lora-equal-time": args.fast_steps,
                     "lora-converged": args.converge_steps}.get(condition, 0)
            fast = condition == "prediction+fine-tune"
            rows.append(run_condition(condition, identity, image_dir, workdir / identity.name / condition,
                                      hypernetwork=args.hypernetwork, steps=steps, lr=args.fast_lr if fast else args.lr,
                                      warmup=args.fast_warmup if fast else 0, rank=args.rank, num_images=args.num_images))
            done.write_text(json.dumps(rows[-1]))
            row = rows[-1]
            print(f"{identity.name:<24} {condition:<22} fidelity {row['fidelity']:.2f} "
                  f"editability {row['editability']:.2f} time {row['seconds'] or 0:.1f} s", flush=True)
    print_and_write(table_lines(rows, args, identities), Path(args.results))


if __name__ == "__main__":
    main()
