"""Form inputs made from the config dataclasses, as the CLI's options are: one input per field.

Each input is labelled with the field's name and carries its CLI help text and option name, so an
error message that names `--batch-size` points at the input labelled "Batch size".
"""

from __future__ import annotations

import dataclasses
import html
from typing import Any

import gradio as gr

from ..config import TrainConfig, field_choices
from ..methods import method_option_fields
from ..options import coerce, default_of, field_kinds


def find_field(config_class: type, name: str) -> tuple[type, dataclasses.Field]:
    """Field `name` of `config_class` and the class declaring it (for training, a method's options class)."""
    for field in dataclasses.fields(config_class):
        if field.name == name:
            return config_class, field
    option = method_option_fields()[name] if config_class is TrainConfig else None
    if option is None:
        raise KeyError(name)
    return option.owner, option.field


def field_input(config_class: type, name: str, choices: list | None = None, **overrides) -> gr.components.Component:
    """A Gradio input for field `name` of `config_class`, starting at its default; `choices` make it a list."""
    owner, field = find_field(config_class, name)
    kind = field_kinds(owner)[name]
    default = default_of(field)
    options = {"label": name.replace("_", " ").capitalize(),
               "info": f"{field.metadata['help']} (--{name.replace('_', '-')})",
               "value": default, "elem_id": f"{config_class.__name__.removesuffix('Config').lower()}-{name}"}
    options.update(overrides)
    choices = choices or field_choices(owner, field)
    if choices:
        return gr.Radio(list(choices), **options) if len(choices) <= 4 else gr.Dropdown(list(choices), **options)
    if kind is bool:
        return gr.Checkbox(**options)
    if default is None and kind is not str:  # an empty number input sends 0; an empty text box, nothing
        return gr.Textbox(**{"placeholder": "empty: the default", **options, "value": options["value"] or ""})
    if kind is int:
        return gr.Number(precision=0, **options)
    if kind is float:
        return gr.Number(**options)
    return gr.Textbox(**{**options, "value": options["value"] or ""})


def shown_as_is(text: str) -> str:
    """`text` for a gr.Markdown, which would take a token such as <my-cat> for an HTML tag and hide it."""
    return html.escape(text, quote=False)


def config_from_form(config_class: type, values: dict[str, Any], fixed: dict[str, Any]):
    """`config_class` from form values (an empty input means the default) plus `fixed` values.

    The Teach form shows every method's options; those of methods other than the chosen one are left out.
    """
    given = {}
    for name, value in values.items():
        if isinstance(value, str):
            value = value.strip()
        if value is None or value == "":
            if default_of(find_field(config_class, name)[1]) is None:
                given[name] = None
            continue
        given[name] = value
    if config_class is TrainConfig:
        return TrainConfig.from_values({**given, **fixed}, "the form", lenient=True)
    return coerce(config_class, {**given, **fixed}, "the form")
