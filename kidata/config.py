"""The one path from TOML to frozen dataclasses, shared by recipes (``pipelines/*.toml``), model
presets and training configs (``model/*.toml``): reading a file (shipped names resolved), refusing
unknown keys with the nearest valid one, coercing TOML's types to the fields', the choices a field
may take (a ``Literal`` declared once, read by validation and by the CLI's ``choices=``), and
overrides: ``{"train": {"steps": 3}}`` from Python, ``--train.steps 3`` from the command line (the
same nested table once parsed)."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import sys
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")
# ``{"train": {"steps": 3}}``: a value per key per table; a value replaces the table's (a whole
# inline table such as ``data.weights`` too: overrides are not merged deeply)
Overrides = Mapping[str, Mapping[str, Any]]
# the largest recipe or config file read (the biggest shipped one is a few KiB)
MAX_TOML_BYTES = 1 << 20


class ConfigError(ValueError):
    """A config file or table that cannot be used as written; the message names file and key."""


def nearest(key: str, valid: Iterable[str], *, noun: str = "valid keys") -> str:
    """' (did you mean X?)', else ' (valid keys: [...])': the tail of every unknown-key refusal (``noun``
    names what the list holds when it is not keys: readers, tasks)."""
    valid = list(valid)
    match = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean {match[0]!r}?)" if match else f" ({noun}: {sorted(valid)})"


def read_toml(path: str | Path, *, error: type[ValueError] = ConfigError, kind: str | None = None
              ) -> tuple[dict[str, Any], Path]:
    """The parsed file and where it was found (a relative path that does not exist names a shipped
    asset, and with ``kind`` a bare name does too: ``kidata.locate``)."""
    from kidata.locate import locate

    what = {"pipelines": "recipe", "model": "model preset"}.get(kind or "", "file")
    found = locate(path, what=what, accept=("path", "asset"), kind=kind)
    if Path(found).is_dir():
        raise error(f"{found} is a folder; pass a TOML file")
    with open(found, "rb") as handle:  # a device or a huge file is refused after MAX_TOML_BYTES, not read whole
        data = handle.read(MAX_TOML_BYTES + 1)
    if len(data) > MAX_TOML_BYTES:
        raise error(f"{found}: larger than {MAX_TOML_BYTES // 1024} KiB; recipes and configs are small TOML files")
    try:
        return tomllib.loads(data.decode("utf-8")), found
    except UnicodeDecodeError as decode_error:
        raise error(f"{found}: not UTF-8 text ({decode_error.reason} at byte {decode_error.start}); "
                    "recipes and configs are TOML files") from None
    except tomllib.TOMLDecodeError as parse_error:
        raise error(f"{found}: not valid TOML ({parse_error})") from parse_error


def check_keys(table: Mapping[str, Any], valid: Sequence[str], where: str, *, section: str = "",
               error: type[ValueError] = ConfigError, noun: str = "key") -> None:
    """Refuses the first unknown key of ``table``: "<where>unknown key '<section>x' (did you mean
    'y'?)"."""
    for key in table:
        if key not in valid:
            raise error(f"{where}unknown {noun} '{section}{key}'{nearest(key, valid)}")


def from_table(kind: type[T], table: Mapping[str, Any], where: str, *, section: str = "",
               error: type[ValueError] = ConfigError, fields_only: bool = False,
               numbers_as_written: bool = False) -> T | dict[str, Any]:
    """``kind(**table)`` after checking the keys against its fields and coercing TOML values
    (lists to tuple fields, integers to float fields); with ``fields_only`` the checked, coerced
    values alone (a partial table, such as one command-line override). ``numbers_as_written`` keeps
    an integer in a float field an integer: a recipe is recorded and hashed as written
    (``scale = 10`` is 10 in every manifest built so far, and 10.0 would be another recipe)."""
    valid = {f.name: f for f in dataclasses.fields(kind)}
    check_keys(table, list(valid), where, section=section, error=error)
    # a choice's value is a string, checked here; which string is the dataclass's own check, whose message names them
    literal = {name: "str | None" if optional else "str" for name, (_, optional) in field_choices(kind).items()}
    values = {key: _coerce(valid[key], value, f"{where}{section}{key}", error, annotation=literal.get(key),
                           widen_integers=not numbers_as_written)
              for key, value in table.items()}
    return values if fields_only else kind(**values)


def option_table(kind: type[T], table: Mapping[str, Any], name: str, error: type[ValueError] = ConfigError) -> T:
    """A nested option table (``data.augment = { crop = 1.0 }``, ``eval.metaworld = { tasks = [...] }``)
    as its frozen dataclass: an unknown key is refused as "unknown key <name>.<key> (did you mean
    ...)", values are typed as the fields. Its fields that default to None are the ones a table may
    leave out (``table_json`` leaves them out again)."""
    valid = {f.name: f for f in dataclasses.fields(kind)}
    for key in table:
        if key not in valid:
            raise error(f"unknown key {name}.{key}{nearest(key, valid)}")
    return kind(**{key: _coerce(valid[key], value, f"{name}.{key}", error) for key, value in table.items()})


def table_json(table: Any) -> dict[str, Any]:
    """An option table's dataclass as the table it was read from: the keys set, in field order
    (unset ones, None, left out), so a config prints and saves as it was written."""
    return {key: value for key, value in dataclasses.asdict(table).items() if value is not None}


def parse_overrides(arguments: Sequence[str]) -> dict[str, Any]:
    """``["--optim.lr", "5e-5", "--data.weights", "{droid = 1.0}"]`` -> {"optim.lr": 5e-05, ...}:
    values read as TOML literals, bare words as strings."""
    out: dict[str, Any] = {}
    items = list(arguments)
    while items:
        flag = items.pop(0)
        if flag.startswith("--") and "." not in flag.partition("=")[0]:
            raise ValueError(f"{flag}: not an option of this command, nor a --section.key override (such as "
                             "--train.steps 3)")
        if not flag.startswith("--") or "." not in flag:
            raise ValueError(f"expected --section.key, got {flag!r}")
        key, _, inline = flag[2:].partition("=")
        if not inline:
            if not items or items[0].startswith("--"):  # the next flag is not this one's value
                raise ValueError(f"{flag} needs a value" + (f" (the next argument is the flag {items[0]})" if items else ""))
            inline = items.pop(0)
        out[key] = _literal(inline)
    return out


def nested_overrides(arguments: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["--optim.lr", "5e-5", "--train.steps=7"]`` -> ``{"optim": {"lr": 5e-05}, "train": {"steps": 7}}``:
    the command line's overrides as the ``Overrides`` Python callers pass."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in parse_overrides(arguments).items():
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Overrides | Sequence[str]) -> dict[str, dict[str, Any]]:
    """A copy of a sectioned config with overrides applied: ``{"section": {"key": value}}``, or
    ``--section.key value`` command-line strings."""
    if not isinstance(overrides, Mapping):
        overrides = nested_overrides(overrides)
    merged = {name: dict(table) for name, table in data.items()}
    for section, table in overrides.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"overrides: {section} = {table!r}: expected a table of keys such as "
                              f"{{{section!r}: {{'key': value}}}}")
        merged.setdefault(section, {}).update(table)
    return merged


def to_arguments(overrides: Overrides) -> list[str]:
    """``{"train": {"steps": 3}}`` -> ``["--train.steps", "3"]``: overrides as the command line that
    ``nested_overrides`` reads back to the same values (for a ``kidata`` command run as a process)."""
    return [item for section, table in overrides.items() for key, value in table.items()
            for item in (f"--{section}.{key}", toml_value(value))]


def choices(literal: Any) -> tuple[str, ...]:
    """The values of a ``Literal[...]`` choice, in declared order: what validation accepts and what
    the CLI offers as ``choices=``."""
    values = typing.get_args(literal)
    if typing.get_origin(literal) is not typing.Literal or not values:
        raise TypeError(f"{literal!r} is not a Literal of choices")
    return values


def _literal(text: str) -> Any:
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


# What a field's annotation (a string under ``from __future__ import annotations``) accepts, by its
# outer type; annotations not named here (dicts of options, nested unions) are checked where read.
_ACCEPTS: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((int,), "an integer"),
    "float": ((int, float), "a number"),
    "bool": ((bool,), "true or false"),
    "str": ((str,), "a string"),
    "tuple": ((list, tuple), "a list"),
    "list": ((list, tuple), "a list"),
    "dict": ((dict,), "a table"),
    "Mapping": ((Mapping,), "a table"),
}


def _accepts(annotation: str) -> tuple[tuple[type, ...], str, bool] | None:
    """(types, their name, None allowed) for a simple annotation such as ``int``, ``float | None``
    or ``tuple[str, ...]``; None for one this module does not check."""
    parts = [part.strip() for part in annotation.split("|")]
    optional = "None" in parts
    outer = {part.split("[", 1)[0] for part in parts if part != "None"}
    if len(outer) != 1 or next(iter(outer)) not in _ACCEPTS:
        return None
    types, name = _ACCEPTS[next(iter(outer))]
    return types, name, optional


@functools.cache
def field_choices(kind: type) -> dict[str, tuple[tuple[str, ...], bool]]:
    """``{field: (choices, None allowed)}`` for a dataclass's fields typed as a ``Literal`` (or
    ``Literal | None``): the one declaration that validation and the CLI's ``choices=`` read
    (computed once per class; the caller does not change it)."""
    try:
        hints = typing.get_type_hints(kind)
    except (NameError, TypeError):  # an annotation only a type checker resolves: those fields go unchecked
        return {}
    out = {}
    for name, hint in hints.items():
        parts = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, _UnionType) else (hint,)
        literals = [part for part in parts if typing.get_origin(part) is typing.Literal]
        if literals and len(literals) + (type(None) in parts) == len(parts):
            out[name] = (tuple(value for literal in literals for value in typing.get_args(literal)), type(None) in parts)
    return out


_UnionType = type(int | None)


def _coerce(spec: dataclasses.Field, value: Any, key: str = "", error: type[ValueError] = ConfigError, *,
            annotation: str | None = None, widen_integers: bool = True) -> Any:
    """The value in the field's type, or a refusal naming the key, the value and the type expected
    (``--train.steps ten`` is one sentence, not a TypeError from deep inside the trainer)."""
    kind = annotation or str(spec.type)
    if isinstance(value, os.PathLike) and kind.split("|")[0].strip() == "str":  # a Path from a Python caller
        value = os.fspath(value)
    accepts = _accepts(kind)
    if accepts is not None:
        types, name, optional = accepts
        wrong_bool = isinstance(value, bool) and bool not in types
        if not (value is None and optional) and (wrong_bool or not isinstance(value, types)):
            raise error(f"{key} = {value!r}: expected {name}{' or nothing' if optional else ''}, "
                        f"got {type(value).__name__}")
    if kind.startswith("tuple") and isinstance(value, list):
        return tuple(value)
    if widen_integers and kind.split("|")[0].strip() == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def to_toml(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """A sectioned config (``TrainConfig.to_json()``) as TOML that ``read_toml`` reads back to the same
    values: one table per section, nested tables inline, None (unset) left out as a comment."""
    lines = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        for key, value in table.items():
            lines.append(f"# {key} unset" if value is None else f"{key} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def toml_value(value: Any) -> str:
    """One value as a TOML literal (``[0.9, 0.95]``, ``"auto"``, ``{ "crop" = 1.0 }``)."""
    import json
    import math

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items() if v is not None) + " }"
    raise TypeError(f"{value!r}: no TOML form")

