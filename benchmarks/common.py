"""What the benchmark scripts share: where things are, their argument parser, and how a table is signed and written."""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from textual_inversion.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
CONCEPTS_DIR = ROOT / "examples" / "concepts"


# train's defaults on miniworld until 2026-12-05, by method, when the options left out became the settings measured
# there (Method.miniworld_defaults). The benchmarks written before then ran with these wherever they left an option
# out, and keep them, so that their commands still give their results files' runs.
TEXTUAL_INVERSION_FORMER = {"vectors": 1, "lr": 5e-3, "batch_size": 1, "ema_decay": 0.0, "steps": 500}
FORMER_DEFAULTS = {"textual-inversion": TEXTUAL_INVERSION_FORMER,
                   "pivotal": {**TEXTUAL_INVERSION_FORMER, "rank": 4, "lora_lr": 1e-4, "ti_fraction": 1.0},
                   "lora": {"rank": 4, "lr": 1e-4, "batch_size": 1, "steps": 500, "lora_layers": "attention",
                            "lr_scheduler": "constant"}}


def former_settings(method: str) -> dict:
    """FORMER_DEFAULTS of `method` (none for the others) but its step count, which a run sets itself."""
    return {name: value for name, value in FORMER_DEFAULTS.get(method, {}).items() if name != "steps"}


def with_former_defaults(values: dict) -> dict:
    """TrainConfig `values` with FORMER_DEFAULTS for the options they leave out, for the methods whose defaults on
    miniworld changed."""
    return {**FORMER_DEFAULTS.get(values.get("method", "textual-inversion"), {}), **values}


def with_init_token(settings: dict, init: str, words: str) -> dict:
    """`settings` (a method's, "method" naming it) with their --init-token filled in where the method has one:
    "{init}" (the default) becomes `init`, "{words}" `words`."""
    if not takes_init_token(settings.get("method", "textual-inversion")):
        return settings
    return {**settings, "init_token": settings.get("init_token", "{init}").format(init=init, words=words)}


def takes_init_token(method: str) -> bool:
    """Whether `method` has --init-token. The benchmarks give the concept's initializer word only to the methods
    that have it and build their TrainConfig strictly, so that a misspelt option stops the run instead of being
    dropped (as `lenient` would drop it)."""
    import dataclasses

    from textual_inversion.methods import get_method

    return "init_token" in {f.name for f in dataclasses.fields(get_method(method).options_class)}


def argument_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser whose --help shows the script's docstring as written."""
    return argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def command() -> str:
    """This run's command line, for a table's "Produced by": `python -m benchmarks.<script> <its arguments>`."""
    return shlex.join(["python", "-m", sys.modules["__main__"].__spec__.name, *sys.argv[1:]])


def bundled_concept(name: str):
    """(folder, ConceptSpec) of a bundled miniworld concept in examples/concepts/."""
    from textual_inversion.miniworld.concepts import ConceptSpec

    folder = CONCEPTS_DIR / name
    return folder, ConceptSpec.from_toml(folder / "concept.toml")


def machine(device: str, threads: int) -> str:
    """How a table names where it ran: "CPU, N threads", or the device and, for CUDA, the GPU's name."""
    if device == "cpu":
        return f"CPU, {threads} threads"
    if device.startswith("cuda"):
        import torch

        return f"{device}: {torch.cuda.get_device_name(device)}"
    return device


def device_suffix(device: str) -> str:
    """"" on the CPU, else e.g. "_cuda": results from a GPU are written beside the CPU ones, not over them."""
    return "" if device == "cpu" else f"_{device.split(':')[0]}"


HAND_NOTE = "Note (added by hand"
KEPT_NOTES = "Notes kept from this file's previous version (they describe the runs before the table above):"


def print_and_write(lines: list[str], path: Path) -> str:
    """Print a table (its lines) and write it to `path`; returns its text. The notes someone added by hand to the
    file's previous version (paragraphs starting "Note (added by hand") are kept below the new table: they record
    why earlier runs differ, which a rerun of the script must not erase."""
    table = "\n".join(lines) + "\n"
    print(table)
    path = Path(path)
    notes = hand_notes(path.read_text(encoding="utf-8")) if path.exists() else []
    text = table + "".join(f"\n{paragraph}\n" for paragraph in ([KEPT_NOTES, *notes] if notes else []))
    write_text_atomic(path, text)  # a run killed while writing leaves the previous table and its notes
    return table


def hand_notes(text: str) -> list[str]:
    """The paragraphs of a results file's `text` that start with "Note (added by hand", in their order."""
    paragraphs = [paragraph.strip() for paragraph in text.split("\n\n")]
    return [paragraph for paragraph in paragraphs if paragraph.startswith(HAND_NOTE)]


def in_fresh_process(function, *args):
    """`function(*args)` in a new spawned process, as a user's launch is: its imports, memory peak and
    caches are its own. The child sees os.environ as it is at the call."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def weights_fingerprint(pipeline_folder: Path) -> str:
    """A short hash of a pipeline folder's weight files: results recorded against a model name it, so that a
    model rebuilt in the same folder (CPU builds differ run to run) is not taken for the one measured before."""
    digest = hashlib.sha256()
    for path in sorted(Path(pipeline_folder).glob("*/*.safetensors")):
        digest.update(path.relative_to(pipeline_folder).as_posix().encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
