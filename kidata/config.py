"""The one path from TOML to frozen dataclasses, shared by recipes (``pipelines/*.toml``), model
presets and training configs (``model/*.toml``): reading a file (shipped names resolved), refusing
unknown keys with the nearest valid one, coercing TOML's types to the fields', and
``--section.key value`` command-line overrides."""

from __future__ import annotations

import dataclasses
import difflib
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")
# the largest recipe or config file read (the biggest shipped one is a few KiB)
MAX_TOML_BYTES = 1 << 20


class ConfigError(ValueError):
    """A config file or table that cannot be used as written; the message names file and key."""


def nearest(key: str, valid: Iterable[str]) -> str:
    """' (did you mean X?)', else ' (valid keys: [...])': the tail of every unknown-key refusal."""
    valid = list(valid)
    match = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean {match[0]!r}?)" if match else f" (valid keys: {sorted(valid)})"


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
               error: type[ValueError] = ConfigError, fields_only: bool = False) -> T | dict[str, Any]:
    """``kind(**table)`` after checking the keys against its fields and coercing TOML values
    (lists to tuple fields, integers to float fields); with ``fields_only`` the checked, coerced
    values alone (a partial table, such as one command-line override)."""
    valid = {f.name: f for f in dataclasses.fields(kind)}
    check_keys(table, list(valid), where, section=section, error=error)
    values = {key: _coerce(valid[key], value, f"{where}{section}{key}", error) for key, value in table.items()}
    return values if fields_only else kind(**values)


def parse_overrides(arguments: Sequence[str]) -> dict[str, Any]:
    """``["--optim.lr", "5e-5", "--data.weights", "{droid = 1.0}"]`` -> {"optim.lr": 5e-05, ...}:
    values read as TOML literals, bare words as strings."""
    out: dict[str, Any] = {}
    items = list(arguments)
    while items:
        flag = items.pop(0)
        if not flag.startswith("--") or "." not in flag:
            raise ValueError(f"expected --section.key, got {flag!r}")
        key, _, inline = flag[2:].partition("=")
        if not inline:
            if not items:
                raise ValueError(f"{flag} needs a value")
            inline = items.pop(0)
        out[key] = _literal(inline)
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A copy of a sectioned config with ``--section.key value`` overrides applied."""
    merged = {name: dict(table) for name, table in data.items()}
    for key, value in parse_overrides(overrides).items():
        section, _, name = key.partition(".")
        merged.setdefault(section, {})[name] = value
    return merged


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


def _coerce(spec: dataclasses.Field, value: Any, key: str = "", error: type[ValueError] = ConfigError) -> Any:
    """The value in the field's type, or a refusal naming the key, the value and the type expected
    (``--train.steps ten`` is one sentence, not a TypeError from deep inside the trainer)."""
    kind = str(spec.type)
    accepts = _accepts(kind)
    if accepts is not None:
        types, name, optional = accepts
        wrong_bool = isinstance(value, bool) and bool not in types
        if not (value is None and optional) and (wrong_bool or not isinstance(value, types)):
            raise error(f"{key} = {value!r}: expected {name}{' or nothing' if optional else ''}, "
                        f"got {type(value).__name__}")
    if kind.startswith("tuple") and isinstance(value, list):
        return tuple(value)
    if kind.split("|")[0].strip() == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def to_toml(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """A sectioned config (``TrainConfig.to_json()``) as TOML that ``read_toml`` reads back to the same
    values: one table per section, nested tables inline, None (unset) left out as a comment."""
    lines = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        for key, value in table.items():
            lines.append(f"# {key} unset" if value is None else f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
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
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items() if v is not None) + " }"
    raise TypeError(f"{value!r}: no TOML form")

