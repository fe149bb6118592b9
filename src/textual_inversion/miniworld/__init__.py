"""miniworld: a procedurally rendered world and a small text-to-image model trained on it.

The packaged model (``model/``) is a plain diffusers StableDiffusionPipeline folder,
so the tool's main job can run offline and be scored against ground truth. Since 2026-12-05 it is the
base build (``build.py``) continued three times (``benchmarks/miniworld_twins_recipe.sh``; weights
fingerprint 2a05c6767420493f, benchmarks/common.py), which draws patterns as asked more often and learns more
concepts than the base build shipped before it (docs/subjects.md). ``hypernetwork/`` holds the HyperDreamBooth
hypernetwork trained for it (built by ``textual_inversion.builds.hypernetwork``).
"""

from __future__ import annotations

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent / "model"
HYPERNETWORK_DIR = Path(__file__).resolve().parent / "hypernetwork"


def model_path() -> str:
    """Path of the packaged miniworld pipeline folder; raises if the weights are missing."""
    if not (MODEL_DIR / "model_index.json").is_file() or not (MODEL_DIR / "unet").is_dir():
        raise FileNotFoundError(
            f"miniworld model weights not found in {MODEL_DIR}; "
            "build them with `python -m textual_inversion.miniworld.build`"
        )
    return str(MODEL_DIR)
