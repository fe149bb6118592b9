"""Training methods: each says which parameters learn, how they start, and how they are saved.

Everything else (data, the loop, checkpoints, previews, progress, resume) is shared in `training.py`.
"""

from .textual_inversion import TextualInversion

METHODS = {"textual-inversion": TextualInversion}

__all__ = ["METHODS", "TextualInversion"]
