"""The data kidata ships, found the same way in a checkout, an editable install and a wheel:

* ``pipelines/*.toml``: recipes (``kidata build pipelines/demo.toml``);
* ``model/*.toml``: model + training presets (``kidata train --model model/ki_tiny.toml``);
* ``tokenizers/demo-text``: the demo SentencePiece text tokenizer recipes name by default.

In a checkout (and an editable install) these folders sit at the top level, beside ``pyproject.toml``:
the design keeps code in ``kidata/`` and the files that configure it in top-level folders of the same
names. A wheel cannot hold top-level data folders, so the build (``setup.py``) copies them into this
package folder; ``ROOT`` is whichever of the two holds them, checkout first.

A relative path that does not exist where it is given is looked up under ``ROOT`` by the same name,
so the short names work from any folder. Nothing here is found through ``Path(__file__).parents``
outside this module.
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


class AssetNotFound(FileNotFoundError):
    """A path that exists neither where it was given nor among the shipped assets."""


def shipped(name: str | Path) -> Path | None:
    """The shipped asset of that relative name (``pipelines/demo.toml``), or None."""
    name = Path(name)
    if name.is_absolute() or ".." in name.parts:
        return None
    candidate = ROOT / name
    return candidate if candidate.exists() else None


def find(name: str | Path) -> list[Path]:
    """Every shipped asset that ``name`` can mean: a relative name (``pipelines/demo.toml``) names one,
    a bare name (``demo``, ``ki_tiny``, ``demo-text``) the asset of that stem in any kind, as
    ``kidata build demo`` and ``kidata train --model ki_tiny`` read it."""
    exact = shipped(name)
    if exact is not None:
        return [exact]
    given = Path(name)
    if len(given.parts) != 1 or given.suffix:
        return []
    candidates = [Path(kind) / f"{given.name}.toml" for kind in KINDS] + [Path(kind) / given.name for kind in KINDS]
    return [found for found in (shipped(candidate) for candidate in candidates) if found is not None]


def resolve(path: str | Path, *, base: str | Path | None = None, kind: str | None = None) -> Path:
    """``path`` as given (relative to ``base`` or the working folder) when it exists, else the
    shipped asset of that name; with ``kind``, a bare name is a shipped asset of that kind
    (``demo`` -> ``pipelines/demo.toml``, ``ki_tiny`` -> ``model/ki_tiny.toml``). Refuses with
    both places named and what ships of that kind."""
    given = Path(path)
    local = (Path(base) / given) if base is not None and not given.is_absolute() else given
    if local.exists():
        return local
    asset = shipped(given)
    if asset is None and kind is not None and len(given.parts) == 1 and not given.suffix:
        asset = shipped(Path(kind) / f"{given.name}.toml")
    if asset is not None:
        return asset
    kind = kind or (given.parts[0] if given.parts and given.parts[0] in KINDS else None)
    hint = f"; shipped {kind}: {listing()[kind]}" if kind else f"; shipped assets: {sorted(_all())}"
    raise AssetNotFound(f"{path}: no such file (looked in {local.resolve().parent} and {ROOT}){hint}")


def listing() -> dict[str, list[str]]:
    """Shipped assets by kind, as the names ``resolve`` accepts."""
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
