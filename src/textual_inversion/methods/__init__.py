"""Training methods, registered by name: the one place that says which methods exist.

Adding a method is one module (a `Method` subclass and its options dataclass, see `base.py`) and one
`register` line below; the CLI, TOML files, the web page, the loop and the concept loader find it here.
"""

from __future__ import annotations

import dataclasses

from ..errors import UserError
from ..options import default_of, field_kinds, flag
from .base import Method, MethodOptions
from .dreambooth import DreamBooth
from .hyperdreambooth import HyperDreamBooth
from .lidb import LiDB
from .lora import LoRA
from .pivotal import PivotalTuning
from .textual_inversion import TextualInversion

METHODS: dict[str, type[Method]] = {}


def register(method: type[Method]) -> type[Method]:
    """Make `method` available as `--method <method.name>`; an option it shares by name with another
    method must be the same option (kind, default, help), because it is one flag."""
    if METHODS.get(method.name, method) is not method:
        raise ValueError(f"method {method.name}: the name is taken by {METHODS[method.name].__name__}")
    fields = method_option_fields()
    for mine in dataclasses.fields(method.options_class):
        theirs = fields.get(mine.name)
        if theirs is None:
            continue
        same = (field_kinds(method.options_class)[mine.name] is field_kinds(theirs.owner)[mine.name]
                and default_of(mine) == default_of(theirs.field) and mine.metadata == theirs.field.metadata)
        if not same:
            raise ValueError(f"method {method.name}: option {mine.name} differs from {theirs.owner.__name__}'s")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> type[Method]:
    """The method registered as `name`; UserError naming the choices otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"--method {name!r}: choose one of {', '.join(METHODS)}") from None


@dataclasses.dataclass(frozen=True)
class OptionField:
    """One method option as the CLI and the form show it: the field, the options class declaring it first,
    and every method that has it."""

    field: dataclasses.Field
    owner: type[MethodOptions]
    methods: tuple[str, ...]


def method_option_fields() -> dict[str, OptionField]:
    """Every registered method's options by field name, in registration order (shared ones once)."""
    found: dict[str, OptionField] = {}
    for name, method in METHODS.items():
        for config_field in dataclasses.fields(method.options_class):
            known = found.get(config_field.name)
            if known is None:
                found[config_field.name] = OptionField(config_field, method.options_class, (name,))
            else:
                found[config_field.name] = dataclasses.replace(known, methods=(*known.methods, name))
    return found


def not_an_option_of(method: str, names: list[str]) -> str:
    """One line saying which methods the options `names` belong to, for a run of `method`."""
    fields = method_option_fields()
    unknown = [flag(name) for name in names if name not in fields]
    if unknown:
        return f"unknown option {', '.join(unknown)}; `textual-inversion train --help` lists them"
    return "; ".join(f"{flag(name)} is an option of {', '.join(fields[name].methods)}" for name in names) + \
        f", not of --method {method}"


for _method in (TextualInversion, DreamBooth, LoRA, PivotalTuning, LiDB, HyperDreamBooth):
    register(_method)

__all__ = ["METHODS", "Method", "MethodOptions", "get_method", "method_option_fields", "register"]
