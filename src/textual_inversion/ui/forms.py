"""Form inputs made from the config dataclasses, as the CLI's options are: one input per field.

Each input is labelled with the field's name and carries its CLI help text and option name, so an
error message that names `--batch-size` points at the input labelled "Batch size".
"""

from __future__ import annotations

import dataclasses
import html
from typing import Any

import gradio as gr

from ..config import coerce


def field_input(config_class: type, name: str, choices: list | None = None, **overrides) -> gr.components.Component:
    """A Gradio input for field `name` of `config_class`, starting at its default; `choices` make it a list."""
    field = next(f for f in dataclasses.fields(config_class) if f.name == name)
    kind = str(field.type)
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    options = {"label": name.replace("_", " ").capitalize(),
               "info": f"{field.metadata['help']} (--{name.replace('_', '-')})",
               "value": default, "elem_id": f"{config_class.__name__.removesuffix('Config').lower()}-{name}"}
    options.update(overrides)
    choices = choices or field.metadata.get("choices")
    if choices:
        return gr.Radio(list(choices), **options) if len(choices) <= 4 else gr.Dropdown(list(choices), **options)
    if kind.startswith("bool"):
        return gr.Checkbox(**options)
    if default is None and not kind.startswith("str"):  # an empty number input sends 0; an empty text box, nothing
        return gr.Textbox(**{"placeholder": "empty: the default", **options, "value": options["value"] or ""})
    if kind.startswith("int"):
        return gr.Number(precision=0, **options)
    if kind.startswith("float"):
        return gr.Number(**options)
    return gr.Textbox(**{**options, "value": options["value"] or ""})


def shown_as_is(text: str) -> str:
    """`text` for a gr.Markdown, which would take a token such as <my-cat> for an HTML tag and hide it."""
    return html.escape(text, quote=False)


def config_from_form(config_class: type, values: dict[str, Any], fixed: dict[str, Any]):
    """`config_class` from form values (an empty input means the default) plus `fixed` values."""
    defaults = {f.name: f.default for f in dataclasses.fields(config_class)}
    given = {}
    for name, value in values.items():
        if isinstance(value, str):
            value = value.strip()
        if value is None or value == "":
            if defaults[name] is None:
                given[name] = None
            continue
        given[name] = value
    return coerce(config_class, {**given, **fixed}, "the form")
