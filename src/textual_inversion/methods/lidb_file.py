"""LiDB files: the train matrices and the aux seed (lidb_weights.safetensors), and their rank-1 LoRA copy."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig
from safetensors import safe_open
from safetensors.torch import save_file

from ..atomic import atomic_path
from ..errors import UserError
from ..outputs import LORA, OUTPUT_FILES


def write_lidb(path: Path, train: dict[str, tuple[torch.Tensor, torch.Tensor]], seed: int, down_dim: int, up_dim: int,
               metadata: dict[str, str] | None = None) -> Path:
    """Write {layer: (down_train, up_train)} with the seed and dims that regenerate the aux matrices."""
    tensors = {}
    for name, (down, up) in train.items():
        tensors[f"{name}.down_train"] = down.detach().float().cpu().contiguous()
        tensors[f"{name}.up_train"] = up.detach().float().cpu().contiguous()
    info = {**(metadata or {}), "format": "lidb", "seed": str(seed), "down_dim": str(down_dim), "up_dim": str(up_dim),
            "layers": json.dumps(list(train))}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=info)
    return Path(path)


def read_lidb(path: Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, str]]:
    """({layer: (down_train, up_train)}, metadata with seed, down_dim, up_dim) of a LiDB file."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            if metadata.get("format") != "lidb":
                raise UserError(f"{path}: not a LiDB file (written by --method lidb)")
            layers = json.loads(metadata["layers"])
            train = {name: (handle.get_tensor(f"{name}.down_train"), handle.get_tensor(f"{name}.up_train"))
                     for name in layers}
    except (OSError, KeyError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: cannot read this LiDB file ({error})") from None
    return train, metadata


def write_rank1_lora(output_dir: Path, pipeline_class, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> Path:
    """{layer: (lora_A 1 x in, lora_B out x 1)} as diffusers' LoRA file (rank 1, alpha 1) for `load_lora_weights`."""
    state = {}
    for name, (lora_a, lora_b) in factors.items():
        state[f"{name}.lora.down.weight"] = lora_a.detach().float().cpu().contiguous()
        state[f"{name}.lora.up.weight"] = lora_b.detach().float().cpu().contiguous()
    # Exactly the layers that have an update: with --lidb-layers cross-kv, no empty adapters elsewhere.
    adapter = LoraConfig(r=1, lora_alpha=1, target_modules=sorted(factors)).to_dict()
    with atomic_path(Path(output_dir) / OUTPUT_FILES[LORA]) as temporary:
        # save_lora_weights names its file itself; write into a folder beside the temporary, then move it over.
        staging = temporary.parent / (temporary.name + ".d")
        staging.mkdir()
        try:
            pipeline_class.save_lora_weights(str(staging), unet_lora_layers=state, unet_lora_adapter_metadata=adapter,
                                             safe_serialization=True)
            (staging / OUTPUT_FILES[LORA]).replace(temporary)
        finally:
            for leftover in staging.iterdir():
                leftover.unlink()
            staging.rmdir()
    return Path(output_dir) / OUTPUT_FILES[LORA]
