"""textual-inversion: teach a text-to-image model your subject from a few pictures.

The public API is imported lazily, so `textual-inversion --help` starts without loading torch.
"""

from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "train": "training", "TrainResult": "training",
    "generate": "generation",
    "load_concepts": "concepts",
    "TrainConfig": "config", "GenerateConfig": "config",
    "UserError": "errors",
    "Embedding": "formats", "read_embedding": "formats", "write_embedding": "formats",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
