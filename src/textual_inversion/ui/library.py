"""The concepts on disk: run folders (each holds a run.json) under the runs folder; list, rename, delete."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..atomic import write_text_atomic
from ..concepts import run_outputs
from ..config import TrainConfig
from ..data import IMAGE_SUFFIXES
from ..errors import UserError
from ..formats import read_embedding, write_embedding
from ..methods import METHODS
from ..outputs import EMBEDDING, LORA, OUTPUT_FILES, PIPELINE
from ..rundir import PREVIEW_DIR, RUN_FILE, read_run_file


@dataclass
class Concept:
    """One run folder as the Concepts tab shows it."""

    folder: Path
    token: str
    method: str
    base_model: str
    status: str  # running, stopped, interrupted, finished (as run.json says)
    created: str  # when the run finished, else when run.json was last written
    preview: Path | None  # the newest preview grid, else the first training image

    @property
    def usable(self) -> bool:
        """Holds what `generate --concept` loads."""
        outputs, _ = run_outputs(self.folder)
        return any(kind in outputs for kind in (EMBEDDING, LORA, PIPELINE))

    def label(self) -> str:
        return f"{self.token} · {self.method} · {self.folder.name}"


def list_concepts(runs_dir: str | Path) -> list[Concept]:
    """Every run folder under `runs_dir` (nested ones too, e.g. the demo's), newest first."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    concepts = [read_concept(run_file.parent) for run_file in root.rglob(RUN_FILE)]
    return sorted((c for c in concepts if c is not None), key=lambda c: c.created, reverse=True)


def read_concept(folder: Path) -> Concept | None:
    """The Concept in `folder`, or None if its run.json cannot be read (a run being written, say)."""
    record = read_run_file(folder)
    config = record.get("config") if record else None
    if not isinstance(config, dict):
        return None
    run_file = folder / RUN_FILE
    metadata = record.get("metadata", {})
    written = datetime.fromtimestamp(run_file.stat().st_mtime, UTC).isoformat(timespec="seconds")
    previews = sorted((folder / PREVIEW_DIR).glob("step-*.png"))
    images_dir = Path(config["images"]) if config.get("images") else None
    images = sorted(p for p in images_dir.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if images_dir else []
    preview = previews[-1] if previews else images[0] if images else None
    return Concept(folder=folder, token=config.get("token", "?"), method=config.get("method", "?"),
                   base_model=config.get("model", "?"), status=record.get("status", "?"),
                   created=metadata.get("created", written), preview=preview)


def rename_concept(folder: Path, new_token: str) -> None:
    """Give a learned token a new name, in its embedding file and run.json; the folder keeps its name."""
    concept = read_concept(folder)
    if concept is None:
        raise UserError(f"{folder}: not a run folder (no readable {RUN_FILE})")
    method = METHODS.get(concept.method)
    if method is not None and not method.adds_token:
        # Its word is an ordinary prompt word the weights were trained on, not a token whose vectors are saved.
        raise UserError(f"{folder}: a {concept.method} run learned its word into the weights; "
                        "train again to use another word")
    embedding_path = run_outputs(folder)[0].get(EMBEDDING)
    if embedding_path is None:
        raise UserError(f"{folder}: holds no {OUTPUT_FILES[EMBEDDING]} yet (status {concept.status}); "
                        "finish the run first")
    TrainConfig(images="unused", token=new_token, options={"init_token": "unused"}).validate()  # the CLI's rules
    embedding = read_embedding(embedding_path)
    embedding.token = new_token
    write_embedding(embedding, embedding_path)
    record = read_run_file(folder)
    record["config"]["token"] = new_token
    if "metadata" in record:
        record["metadata"]["token"] = new_token
    write_text_atomic(folder / RUN_FILE, json.dumps(record, indent=2))


def delete_concept(folder: Path, runs_dir: str | Path) -> None:
    """Remove a run folder; only folders holding a run.json inside `runs_dir` qualify."""
    folder, root = Path(folder).resolve(), Path(runs_dir).resolve()
    if root not in folder.parents or not (folder / RUN_FILE).is_file():
        raise UserError(f"{folder}: not a run folder under {root}; nothing deleted")
    shutil.rmtree(folder)


def download_files(folder: Path) -> list[Path]:
    """The files a finished run offers: the learned weights, loss files and run.json (not checkpoints)."""
    return sorted(path for path in Path(folder).iterdir() if path.is_file() and not path.name.startswith("."))
