"""Launch-script flags made from a config dataclass: one flag per field, described once.

Example:
    >>> config_flags.define_config_flags(TrainConfig, bounds={"steps": {"lower_bound": 1}})
    >>> changes = config_flags.given_fields(TrainConfig, paths=("init_from",))
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import types
import typing

from absl import app, flags

from keras_invert.files import check_existing_file


def define_config_flags(
    config_class, *, choices=None, bounds=None, skip=(), flag_values=flags.FLAGS
) -> None:
    """One flag per field of the dataclass `config_class`, each unset (None) by default.

    A flag's help is the field's entry in the class docstring's `Args:`, so a
    setting is described once. Its kind follows the field's type (int, float,
    str, bool; a tuple is a comma-separated list); a field in `choices` is an
    enum. A flag given overrides the field; the others keep the preset's value.

    Args:
        config_class: a dataclass with a Google-style `Args:` docstring.
        choices: field name -> the values it takes.
        bounds: field name -> `lower_bound`/`upper_bound` keyword arguments.
        skip: fields without a flag (e.g. a dict).
        flag_values: where the flags are defined.
    """
    choices, bounds = choices or {}, bounds or {}
    # The flags belong to the calling script (its --helpshort lists them), as absl
    # would attribute them had the script defined them itself.
    caller = sys._getframe(1).f_globals.get("__name__")
    module_name = sys.argv[0] if caller == "__main__" else caller
    helps = _documented_fields(config_class.__doc__)
    hints = typing.get_type_hints(config_class)
    define = {
        bool: flags.DEFINE_bool,
        int: flags.DEFINE_integer,
        float: flags.DEFINE_float,
        str: flags.DEFINE_string,
        tuple: flags.DEFINE_list,
    }
    for field in dataclasses.fields(config_class):
        if field.name in skip:
            continue
        name, help_text = field.name, helps[field.name]
        if name in choices:
            flags.DEFINE_enum(
                name, None, list(choices[name]), help_text,
                flag_values=flag_values, module_name=module_name,
            )  # fmt: skip
            continue
        define[_field_kind(hints[name])[0]](
            name, None, help_text, flag_values=flag_values, module_name=module_name,
            **bounds.get(name, {}),
        )  # fmt: skip


def given_fields(config_class, *, paths=(), files=(), flag_values=flags.FLAGS) -> dict:
    """The fields of `config_class` given as flags: `{name: value}`, ready for the config.

    A list flag's items become numbers where the field is a tuple of them.

    Args:
        config_class: the dataclass whose fields `define_config_flags` made flags.
        paths: fields made absolute, so that the stored config still names the
            path from another directory.
        files: of those, the ones that must name an existing file.
        flag_values: where the flags are defined.

    Raises:
        ValueError: a file that does not exist or is a folder.
        app.UsageError: a list item that is not a number.
    """
    hints = typing.get_type_hints(config_class)
    changes = {
        field.name: flag_values[field.name].value
        for field in dataclasses.fields(config_class)
        if field.name in flag_values and flag_values[field.name].present
    }
    for name in paths:
        if changes.get(name):
            changes[name] = os.path.abspath(changes[name])
            if name in files:
                check_existing_file(changes[name], name)
    for name, value in changes.items():
        kind, items = _field_kind(hints[name])
        if value is not None and kind is tuple and items[:1] in ((int,), (float,)):
            try:
                changes[name] = tuple(items[0](entry) for entry in value)
            except ValueError as error:
                raise app.UsageError(f"--{name}: expected numbers ({error})") from error
    return changes


def _documented_fields(docstring: str) -> dict[str, str]:
    """`{field: text}` of the `Args:` entries of a docstring ("a, b: text" documents both)."""
    entries, names = {}, []
    lines = iter(docstring.split("Args:", 1)[1].splitlines())
    for line in lines:
        if not line.strip():
            if entries:
                break
            continue
        # An entry starts at the 8th column with a name; deeper lines continue it.
        match = re.fullmatch(r" {8}(\w[\w, ]*): (.*)", line)
        if match:
            names = [name.strip() for name in match.group(1).split(",")]
            entries.update(dict.fromkeys(names, match.group(2).strip()))
        elif names:
            for name in names:
                entries[name] += " " + line.strip()
    return entries


def _field_kind(hint) -> tuple[type, tuple]:
    """A field's type without `| None`: bool, int, float, str or tuple, and its item types."""
    if isinstance(hint, types.UnionType):
        hint = next(kind for kind in typing.get_args(hint) if kind is not type(None))
    return typing.get_origin(hint) or hint, typing.get_args(hint)
