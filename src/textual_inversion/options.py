"""Options as dataclass fields: help text, allowed values, their kind, and values from TOML, the CLI or a form.

A field made with `option()` carries the CLI option's help text (and choices), so the command line,
the TOML files and the web page's form are all built from the same dataclasses. Standard library only:
the CLI reads these before anything heavy is imported.
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

from .errors import UserError


def option(default: Any, help: str, choices: tuple | None = None, usual: Any = None, **kwargs) -> Any:
    """A config field carrying its CLI help text (and allowed values). `usual`: for an option whose default
    depends on the model and method (its default then None), the value it takes where the method has no measured
    one for that model (Method.miniworld_defaults)."""
    metadata = {"help": help, "choices": choices, "usual": usual}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


@functools.cache
def field_hints(config_class: type) -> dict[str, Any]:
    """{field name: its type hint} for `config_class`, read once (the hints are strings until resolved)."""
    return typing.get_type_hints(config_class)


@functools.cache
def field_kinds(config_class: type) -> dict[str, type]:
    """{field name: bool, int, float, str or list} for each option of `config_class` (`X | None` gives X)."""
    kinds = {}
    for name, hint in field_hints(config_class).items():
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        kinds[name] = typing.get_origin(hint) or hint
    return kinds


def default_of(config_field: dataclasses.Field) -> Any:
    """The value a field starts at."""
    if config_field.default_factory is not dataclasses.MISSING:
        return config_field.default_factory()
    return config_field.default


def flag(name: str) -> str:
    """The CLI option of field `name`: init_token -> --init-token."""
    return "--" + name.replace("_", "-")


def check_choices(config) -> None:
    """Raise UserError for a value outside a field's allowed choices."""
    for config_field in dataclasses.fields(config):
        choices = config_field.metadata.get("choices")
        value = getattr(config, config_field.name)
        if choices and value not in choices:
            raise UserError(f"{flag(config_field.name)} {value!r}: choose one of {', '.join(choices)}")


def read_toml(path: str | Path, known_names: set[str]) -> dict[str, Any]:
    """Read a TOML file of options; a key outside `known_names` is an error naming it."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--config {path}: no such file") from None
    except UnicodeDecodeError:
        raise UserError(f"--config {path}: not UTF-8 text; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"--config {path}: not valid TOML ({error})") from None
    values = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known_names:
            raise UserError(f"--config {path}: unknown option {key!r}; see --help for the option names")
        values[name] = value
    return values


def convert(kind: type, value: Any) -> Any:
    """`value` from TOML, the CLI or a form as `kind`; ValueError if it is not one."""
    if value is None:
        return None
    if kind is list:
        return list(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError
        return value
    if kind is int:
        if isinstance(value, bool) or float(value) != int(value):
            raise ValueError
        return int(value)
    if kind is float:
        return float(value)
    return str(value)


def coerce(config_class: type, values: dict[str, Any], source: str, **ready: Any) -> Any:
    """Build `config_class` from `values`, converting TOML/CLI types and naming a bad one; `ready` as given."""
    kinds = field_kinds(config_class)
    optional = {name for name, hint in field_hints(config_class).items() if type(None) in typing.get_args(hint)}
    converted = {}
    for name, value in values.items():
        if value is None and name not in optional:  # no value given (an empty form field): the default stands
            continue
        try:
            converted[name] = convert(kinds[name], value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
            raise UserError(f"{source}: option {name.replace('_', '-')!r} has the wrong type ({value!r}, "
                            f"expected {kinds[name].__name__})") from None
    return config_class(**converted, **ready)
