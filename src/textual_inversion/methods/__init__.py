"""Training methods: each says which parameters learn, how they start, and how they are saved.

Everything else (data, the loop, checkpoints, previews, progress, resume) is shared in `training.py`.
A method has: `prepare(pipe)` (add what learns), `trainable_parameters()`, `parameter_groups(lr)`,
`state_dict()` / `load_state_dict()` (for checkpoints), `save(output_dir, metadata) -> [paths]`,
`release()` (leave the pipeline holding what was learned), and optionally `step_started(step)`.
"""

from .dreambooth import DreamBooth
from .hyperdreambooth import HyperDreamBooth
from .lidb import LiDB
from .lora import LoRA
from .pivotal import PivotalTuning
from .textual_inversion import TextualInversion

METHODS = {"textual-inversion": TextualInversion, "dreambooth": DreamBooth, "lora": LoRA, "pivotal": PivotalTuning,
           "lidb": LiDB, "hyperdreambooth": HyperDreamBooth}

__all__ = ["METHODS", "DreamBooth", "HyperDreamBooth", "LiDB", "LoRA", "PivotalTuning", "TextualInversion"]
