"""Which readers and which dataset standardizations exist: one table of each, filled by the modules
that define them, so that adding either is one new module.

* A reader module decorates its opening function with ``@register_reader(name, kind=..., options=...)``.
  Recipes (their keys and path resolution), the build (robot or VLM, <loc> tokens) and the CLI
  (``--reader`` choices) all read the table. Every module of ``kidata.sources`` is imported before
  the table is read; other packages add readers through the ``kidata.readers`` entry-point group.
* A dataset module calls ``register_dataset(spec)`` for each standardization entry (``rlds`` sources'
  ``dataset = NAME``). Every module of ``kidata.sources.datasets`` is imported before a lookup;
  other packages add entries through the ``kidata.datasets`` entry-point group.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable, Mapping

from kidata.config import nearest
from kidata.sources.spec import DatasetSpec

KINDS = ("robot", "vlm")
# keys every recipe source has, whatever its reader
COMMON_SOURCE_KEYS = ("name", "reader", "weight", "holdout")


@dataclass(frozen=True)
class ReaderEntry:
    """One reader: how recipes spell it and how a source is opened from a recipe's option table.

    ``open(options, *, name, image_size, seed)`` returns the source; ``uses_loc_tokens(options)``
    says whether its samples hold <loc> tokens (the build keeps action ids off them)."""

    name: str
    kind: str
    options: tuple[str, ...]
    path_options: frozenset[str]
    open: Callable[..., Any]
    uses_loc_tokens: Callable[[Mapping[str, Any]], bool]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"reader {self.name!r}: kind {self.kind!r}, expected one of {KINDS}")
        clash = set(self.options) & set(COMMON_SOURCE_KEYS)
        if clash:
            raise ValueError(f"reader {self.name!r}: options {sorted(clash)} are common source keys")
        stray = set(self.path_options) - set(self.options)
        if stray:
            raise ValueError(f"reader {self.name!r}: path options {sorted(stray)} are not among its options")


_READERS: dict[str, ReaderEntry] = {}
_DATASETS: dict[str, DatasetSpec] = {}
_LOADED: set[str] = set()


def register_reader(name: str, *, kind: str, options: tuple[str, ...], paths: tuple[str, ...] = (),
                    loc_tokens: bool | Callable[[Mapping[str, Any]], bool] = False):
    """Decorator for a reader's opening function; a second registration of a name is refused."""

    def decorate(open_source: Callable[..., Any]) -> Callable[..., Any]:
        if name in _READERS and _READERS[name].open is not open_source:
            raise ValueError(f"reader {name!r} is registered twice ({_READERS[name].open.__module__} and "
                             f"{open_source.__module__})")
        uses = loc_tokens if callable(loc_tokens) else (lambda _options, value=bool(loc_tokens): value)
        _READERS[name] = ReaderEntry(name, kind, tuple(options), frozenset(paths), open_source, uses)
        return open_source

    return decorate


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Adds a standardization entry; a second entry of the same name is refused."""
    if spec.name in _DATASETS and _DATASETS[spec.name] != spec:
        raise ValueError(f"dataset {spec.name!r} is registered twice")
    _DATASETS[spec.name] = spec
    return spec


def readers() -> dict[str, ReaderEntry]:
    _load("kidata.sources", "kidata.readers")
    return dict(_READERS)


def reader(name: str) -> ReaderEntry:
    table = readers()
    if name not in table:
        raise KeyError(f"unknown reader {name!r}{nearest(name, tuple(table), noun='readers')}")
    return table[name]


def robot_readers() -> tuple[str, ...]:
    return tuple(sorted(n for n, entry in readers().items() if entry.kind == "robot"))


def open_reader(reader_name: str, options: Mapping[str, Any], *, name: str, image_size: int, seed: int = 0) -> Any:
    """A source from a recipe source's option table; ``image_size`` and ``seed`` are the mixture's
    (defaults for readers that render or simulate)."""
    return reader(reader_name).open(options, name=name, image_size=image_size, seed=seed)


def open_source(reader_name: str, *, name: str | None = None, image_size: int = 224, seed: int = 0,
                **options: Any) -> Any:
    """The same from Python keywords, checked as a recipe's table is: ``open_source("rlds",
    path="/data/bridge_dataset/1.0.0", dataset="bridge_dataset")``. Options left as None are unset."""
    entry = reader(reader_name)
    options = {key: value for key, value in options.items() if value is not None}
    for key in options:
        if key not in entry.options:
            raise KeyError(f"reader {reader_name!r}: unknown option {key!r}{nearest(key, entry.options)}")
    return entry.open(options, name=name, image_size=image_size, seed=seed)


def datasets() -> dict[str, DatasetSpec]:
    _load("kidata.sources.datasets", "kidata.datasets")
    return dict(_DATASETS)


def lookup(name: str) -> DatasetSpec:
    table = datasets()
    if name not in table:
        nearest_names = difflib.get_close_matches(name, table, n=3)
        raise KeyError(f"no standardization entry {name!r}; nearest: {nearest_names}; or map the keys in the recipe")
    return table[name]


def _load(package: str, group: str) -> None:
    """Imports every module of ``package`` and every entry point of ``group``, once."""
    if package in _LOADED:
        return
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        if not info.ispkg:
            importlib.import_module(f"{package}.{info.name}")
    for entry in entry_points(group=group):
        entry.load()
    _LOADED.add(package)
