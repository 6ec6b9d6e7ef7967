"""The data kidata ships, found the same way in a checkout, an editable install and a wheel:

* ``pipelines/*.toml``: recipes (``kidata build pipelines/demo.toml``);
* ``model/*.toml``: model + training presets (``kidata train --model model/ki_tiny.toml``);
* ``tokenizers/demo-text``: the demo SentencePiece text tokenizer recipes name by default.

In a checkout (and an editable install) these folders sit at the top level, beside ``pyproject.toml``:
the design keeps code in ``kidata/`` and the files that configure it in top-level folders of the same
names. A wheel cannot hold top-level data folders, so the build (``setup.py``) copies them into this
package folder; ``ROOT`` is whichever of the two holds them, checkout first.

``kidata.locate`` looks a relative path that does not exist where it is given up under ``ROOT`` by
the same name, so the short names work from any folder. Nothing here is found through
``Path(__file__).parents`` outside this module.
"""

from __future__ import annotations

from pathlib import Path

KINDS = ("pipelines", "model", "tokenizers")
PACKAGED = Path(__file__).resolve().parent
CHECKOUT = PACKAGED.parents[1]


def _root() -> Path:
    """The checkout's top level when this package runs from one (``pyproject.toml`` and the data
    folders beside ``kidata/``), else this package folder, where the wheel build put the copies."""
    if (CHECKOUT / "pyproject.toml").is_file() and all((CHECKOUT / kind).is_dir() for kind in KINDS):
        return CHECKOUT
    return PACKAGED


ROOT = _root()


def shipped(name: str | Path, kind: str | None = None) -> Path | None:
    """The shipped asset of that relative name (``pipelines/demo.toml``), and with ``kind`` of a
    bare name of that kind (``demo`` -> ``pipelines/demo.toml``, ``demo-text`` ->
    ``tokenizers/demo-text``), or None."""
    name = Path(name)
    if name.is_absolute() or ".." in name.parts:
        return None
    candidate = ROOT / name
    if candidate.exists():
        return candidate
    if kind is not None and len(name.parts) == 1 and not name.suffix:
        return shipped(Path(kind) / f"{name.name}.toml") or shipped(Path(kind) / name.name)
    return None


def find(name: str | Path) -> list[Path]:
    """Every shipped asset that ``name`` can mean: a relative name (``pipelines/demo.toml``) names one,
    a bare name (``demo``, ``ki_tiny``, ``demo-text``) the asset of that stem in any kind, as
    ``kidata build demo`` and ``kidata train --model ki_tiny`` read it."""
    exact = shipped(name)
    if exact is not None:
        return [exact]
    return [found for found in (shipped(name, kind) for kind in KINDS) if found is not None]


def listing() -> dict[str, list[str]]:
    """Shipped assets by kind, as the names ``kidata.locate`` accepts."""
    out: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for name in _all():
        out[name.split("/", 1)[0]].append(name)
    return out


def _all() -> list[str]:
    names = []
    for kind in KINDS:
        folder = ROOT / kind
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
        names += [f"{kind}/{entry.name}" for entry in entries if entry.suffix == ".toml" or entry.is_dir()]
    return names
