"""``chrysalis init``: a commented ``chrysalis.toml`` generated from the :class:`~agent.settings.Settings` model.

The file is rendered from the model itself (sections, fields, defaults, descriptions, allowed values, bounds and
env var names), so it cannot drift from what the agent accepts: a new field shows up in the next ``init``.
Fields whose default is unset (``None``) and secrets are written as comments, since TOML has no null and secrets
belong in the environment. :func:`render_config` checks its own output by parsing it back.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from agent.errors import ConfigError
from agent.settings import Settings

ENV_PREFIX = "CHRYSALIS_"
_WIDTH = 100

_HEADER = """\
# Chrysalis configuration, written by `chrysalis init` from the settings model (every field, with its default).
#
# Precedence, highest first: CHRYSALIS_* environment variables (CHRYSALIS_<SECTION>__<FIELD>, e.g.
# CHRYSALIS_CHAIN__RPC_URL), this file ($CHRYSALIS_CONFIG, `chrysalis --config FILE`, or ./chrysalis.toml),
# then the built-in defaults. Relative paths are relative to the directory the agent runs in.
# Secrets (keystore passwords, pinning-service tokens) never go here: set them in the environment.
# Lines starting with "# key =" are unset by default; remove the "# " to set them.
"""


def render_config(values: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The commented TOML text of every setting at its default. Parsing it back gives the defaults.

    Args:
        values: Settings to write set instead, per table (``{"credentials": {"key_file": "..."}}``); parsing the
            text back then gives the defaults with these values.
    """
    values = values or {}
    out = [_HEADER]
    tables: list[tuple[str, FieldInfo, type[BaseModel]]] = []
    for name, field in Settings.model_fields.items():
        model = _model_of(field.annotation)
        if model is not None:
            tables.append((name, field, model))
        else:
            out.append(_render_field(name, field, env=ENV_PREFIX + name.upper()))
    for name, _field, model in tables:
        out.append(_render_table(name, model, values.get(name, {})))
    text = "\n".join(out).rstrip() + "\n"
    _check(text, values)
    return text


def config_file(path: Path) -> Path:
    """The file ``chrysalis init PATH`` writes: ``PATH``, or ``PATH/chrysalis.toml`` for a directory."""
    return path / "chrysalis.toml" if path.is_dir() else path


def write_config(
    path: Path, *, force: bool = False, values: Mapping[str, Mapping[str, Any]] | None = None
) -> Path:
    """Write :func:`render_config` (``values`` set) to ``path`` (``path/chrysalis.toml`` for a directory); return
    the file.

    Raises :class:`ConfigError` when the file exists and ``force`` is false, or the directory is missing.
    """
    path = config_file(path)
    if path.exists() and not force:
        raise ConfigError(
            f"{path} already exists; not overwriting it",
            hint="pass --force to replace it with the defaults, or give another path (`chrysalis init FILE`)",
        )
    if not path.parent.is_dir():
        raise ConfigError(
            f"directory {path.parent} does not exist", hint=f"create it first (mkdir -p {path.parent})"
        )
    path.write_text(render_config(values))
    return path


# -- rendering ------------------------------------------------------------------------------------------------


def _render_table(name: str, model: type[BaseModel], values: Mapping[str, Any]) -> str:
    lines = [_comment(_doc(model)), f"[{name}]"]
    arrays: list[tuple[str, FieldInfo, type[BaseModel]]] = []
    for key, field in model.model_fields.items():
        item = _list_item_model(field.annotation)
        if item is not None:
            arrays.append((key, field, item))
            continue
        lines.append(
            _render_field(key, field, env=f"{ENV_PREFIX}{name.upper()}__{key.upper()}", value=values.get(key))
        )
    for key, field, item in arrays:
        lines.append(_render_array_example(f"{name}.{key}", field, item))
    return "\n".join(lines) + "\n"


def _render_field(key: str, field: FieldInfo, *, env: str, value: Any = None) -> str:
    notes = []
    if field.description:
        notes.append(_sentence(field.description))
    notes.append(f"Type: {_describe_type(field.annotation)}{_describe_bounds(field)}. Env: {env}.")
    default = field.get_default(call_default_factory=True)
    if _is_secret(field.annotation):
        notes.append(f"Secret: set it in the environment ({env}), never in this file.")
        return _comment(" ".join(notes)) + "\n"
    if value is not None:
        return _comment(" ".join(notes)) + f"\n{key} = {toml_value(value)}\n"
    if default is None:
        return _comment(" ".join(notes)) + f"\n# {key} = {_placeholder(field)}\n"
    return _comment(" ".join(notes)) + f"\n{key} = {toml_value(default)}\n"


def _render_array_example(dotted: str, field: FieldInfo, item: type[BaseModel]) -> str:
    """A commented ``[[a.b]]`` example: lists of tables default to empty, so every line is a comment."""
    intro = (
        f"{field.description or _doc(item)} Repeat the [[{dotted}]] table once per entry (none by default)."
    )
    lines = [_comment(intro), f"# [[{dotted}]]"]
    for key, sub in item.model_fields.items():
        about = _sentence(sub.description or "")
        if _is_secret(sub.annotation):
            lines.append(_comment(f"{key}: {about} Secret: keep it in the environment, never here."))
            continue
        required = ", required" if sub.is_required() else ""
        lines.append(_comment(f"{about} Type: {_describe_type(sub.annotation)}{required}.".strip()))
        default = None if sub.is_required() else sub.get_default(call_default_factory=True)
        value = _placeholder(sub) if default is None else toml_value(default)
        lines.append(f"# {key} = {value}")
    return "\n".join(lines) + "\n"


_LOOKS_LIKE_SETTING = re.compile(r"^# (\w+ =|\[)")
"""A comment line that reads like a commented-out setting or table, which the header invites to uncomment."""


def _comment(text: str) -> str:
    lines = textwrap.wrap(
        text, width=_WIDTH, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False
    )
    # a description wrapped onto "# key = ..." or "# [table]" would look like a line to uncomment: indent it
    return "\n".join("#  " + line[1:] if _LOOKS_LIKE_SETTING.match(line) else line for line in lines)


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if not text or text[-1] in ".!?)" else text + "."


def _doc(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or model.__name__).split())


# -- values ---------------------------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """One TOML value (strings, paths, numbers, booleans, lists of them). Raises TypeError for anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, PurePath):
        value = str(value)
    if isinstance(value, str):
        # A JSON string without \u escapes for non-ASCII is a valid TOML basic string.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table; keys quoted (they may hold dots: "price.answer")
        keys = [k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else toml_value(k) for k in map(str, value)]
        return (
            "{ "
            + ", ".join(f"{k} = {toml_value(v)}" for k, v in zip(keys, value.values(), strict=True))
            + " }"
        )
    raise TypeError(f"no TOML rendering for {type(value).__name__} {value!r}")


def _placeholder(field: FieldInfo) -> str:
    """An example value for an unset field that is valid once uncommented: the field's first ``examples`` entry,
    else a value of the right TOML type within its bounds."""
    if field.examples:
        return toml_value(field.examples[0])
    base = _strip_none(field.annotation)
    if get_origin(base) in (typing.Union, types.UnionType):  # e.g. int | dict[str, int]: its first arm
        base = _strip_none(get_args(base)[0])
    if get_origin(base) is Literal:
        return toml_value(get_args(base)[0])
    if base is bool:
        return "false"
    if base in (int, float):
        return toml_value(base(_lowest_allowed(field)))
    if get_origin(base) in (list, tuple):
        return "[]"
    if get_origin(base) is dict:
        return "{}"
    return '""'


def _lowest_allowed(field: FieldInfo) -> float:
    """The smallest "round" number the field's bounds allow (0 when unbounded below; ge wins, gt adds 1)."""
    for meta in field.metadata:
        if isinstance(meta, annotated_types.Ge):
            return float(meta.ge)  # type: ignore[arg-type]
        if isinstance(meta, annotated_types.Gt):
            return float(meta.gt) + 1  # type: ignore[arg-type]
    return 0.0


# -- types ----------------------------------------------------------------------------------------------------


def _strip_none(annotation: Any) -> Any:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _model_of(annotation: Any) -> type[BaseModel] | None:
    base = _strip_none(annotation)
    return base if isinstance(base, type) and issubclass(base, BaseModel) else None


def _list_item_model(annotation: Any) -> type[BaseModel] | None:
    base = _strip_none(annotation)
    if get_origin(base) is list:
        (item,) = get_args(base)
        return _model_of(item)
    return None


def _is_secret(annotation: Any) -> bool:
    return _strip_none(annotation) is SecretStr


def _describe_type(annotation: Any) -> str:
    optional = _strip_none(annotation) is not annotation
    base = _strip_none(annotation)
    if get_origin(base) is Literal:
        text = "one of " + ", ".join(toml_value(v) for v in get_args(base))
    elif get_origin(base) is list:
        (item,) = get_args(base)
        text = f"list of {_describe_type(item)}"
    else:
        names = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path (string)"}
        text = names.get(base, getattr(base, "__name__", str(base)))
    return text + (" (optional)" if optional else "")


def _describe_bounds(field: FieldInfo) -> str:
    parts = []
    for meta in field.metadata:
        for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(meta, getattr(annotated_types, attr.capitalize())):
                parts.append(f"{symbol} {getattr(meta, attr)}")
    return f", {' and '.join(parts)}" if parts else ""


def _check(text: str, values: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """The rendered text must parse and validate to exactly the defaults, with ``values`` set (a bug here is ours,
    not the user's)."""
    parsed = tomllib.loads(text)
    rendered = Settings.model_validate(parsed).model_dump(mode="json")
    defaults = Settings.model_validate({k: dict(v) for k, v in (values or {}).items()}).model_dump(
        mode="json"
    )
    if rendered != defaults:
        diff = sorted(
            f"{section}.{key}"
            for section, values in defaults.items()
            if isinstance(values, dict)
            for key in values
            if rendered.get(section, {}).get(key) != values[key]
        )
        raise AssertionError(f"rendered config does not round-trip to the defaults: {diff}")
