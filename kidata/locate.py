"""One way from a reference to a local file or folder, for everything kidata reads by name: recipes,
presets, text and action tokenizers, pretrained checkpoints, LeRobot datasets.

A reference is tried, in this order, as

* ``"url"``: a URL of any fsspec filesystem (``gs://``, ``s3://``, ``http(s)://``, ``memory://``),
  copied once into the local cache (``$XDG_CACHE_HOME/kidata/downloads``, else ``~/.cache/...``);
  a ``file://`` URL is its local path;
* ``"path"``: a local path, relative to ``base`` when given (a recipe's folder), else to the working folder;
* ``"asset"``: a shipped asset of that relative name (``tokenizers/demo-text``; ``kidata.assets``),
  and with ``kind`` a bare name of that kind (``demo`` -> ``pipelines/demo.toml``);
* ``"hub"``: a Hugging Face hub id (``org/name``), a snapshot in the hub cache, fetched when missing.

Each caller names the kinds it accepts. A reference found nowhere is refused in one sentence that
names what was wanted and every place tried (the absolute path, the shipped assets of that kind,
the hub repo and its cache, the URL), so a typo and an unreachable hub read alike everywhere.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Collection, Literal, Sequence

from kidata import assets

Kind = Literal["url", "path", "asset", "hub"]
EVERYWHERE: tuple[Kind, ...] = ("url", "path", "asset", "hub")
# a Hugging Face repo id ("name" or "org/name", huggingface_hub's validate_repo_id), not a file name
_HUB_ID = re.compile(r"(?!\.)[\w.-]+(/(?!\.)[\w.-]+)?")
_FILE_SUFFIXES = (".json", ".model", ".safetensors", ".toml", ".txt")
# how much of an underlying error (a hub or filesystem exception) a refusal quotes
_QUOTED_CHARS = 160


class NotFound(FileNotFoundError):
    """A reference found in none of the places it may name; the message names each place tried."""


def looks_like_hub_id(reference: str | Path) -> bool:
    """Whether ``reference`` can be a Hugging Face repo id: ``name`` or ``org/name`` of letters,
    digits, ``_.-`` (no leading dot, no ``..`` or ``--``), not a file name (``x/model.json``)."""
    text = str(reference)
    return (bool(_HUB_ID.fullmatch(text)) and ".." not in text and "--" not in text and len(text) <= 96
            and not text.endswith(_FILE_SUFFIXES))


def locate(reference: str | Path, *, what: str = "file", accept: Collection[Kind] = EVERYWHERE,
           base: str | Path | None = None, kind: str | None = None, hub_files: Sequence[str] | None = None,
           repo_type: str = "model", revision: str | None = None, advice: str = "") -> Path:
    """The local file or folder ``reference`` names, tried as each of ``accept`` in the order of the
    module's docstring; ``what`` names it in a refusal (``"text tokenizer"``), ``advice`` ends one.

    ``base``: the folder a relative path is relative to; ``kind``: the shipped kind (``pipelines``,
    ``model``, ``tokenizers``) a bare name belongs to and whose listing a refusal shows;
    ``hub_files``: the file patterns a hub snapshot fetches (all when None); ``repo_type`` and
    ``revision``: the hub repo's type (``model``, ``dataset``) and revision (its default when None).
    Raises ``NotFound`` (a ``FileNotFoundError``) naming every place tried."""
    text = str(reference)
    tried: list[str] = []
    if "://" in text:
        if "url" in accept:
            found = _from_url(text, tried)
            if found is not None:
                return found
        else:
            tried.append("a URL is not accepted here")
        raise NotFound(_sentence(what, text, tried, advice))
    given = Path(text)
    if "path" in accept:
        local = Path(base) / given if base is not None and not given.is_absolute() else given
        if local.exists():
            return local
        tried.append(f"{local.absolute()} does not exist")
    if "asset" in accept:
        found = assets.shipped(given, kind)
        if found is not None:
            return found
        tried.append(_no_asset(given, kind))
    if "hub" in accept:
        if looks_like_hub_id(text):
            found = _from_hub(text, tried, hub_files=hub_files, repo_type=repo_type, revision=revision)
            if found is not None:
                return found
        else:
            tried.append("not a Hugging Face hub id (org/name)")
    raise NotFound(_sentence(what, text, tried, advice))


def download_cache() -> Path:
    """Where URLs are copied: ``$XDG_CACHE_HOME/kidata/downloads`` (``~/.cache`` without it)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kidata" / "downloads"


def _sentence(what: str, text: str, tried: list[str], advice: str) -> str:
    return f"{what} {text!r}: {'; '.join(tried)}" + (f"; {advice}" if advice else "")


def _quoted(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())[:_QUOTED_CHARS]}"


def _no_asset(given: Path, kind: str | None) -> str:
    kind = kind or (given.parts[0] if given.parts and given.parts[0] in assets.KINDS else None)
    names = assets.listing()[kind] if kind in assets.KINDS else sorted(sum(assets.listing().values(), []))
    return f"no shipped asset of that name (shipped {kind or 'assets'}, in {assets.ROOT}: {names})"


def _from_hub(repo_id: str, tried: list[str], *, hub_files: Sequence[str] | None, repo_type: str,
              revision: str | None) -> Path | None:
    """The hub snapshot of ``repo_id`` (keyword arguments left at huggingface_hub's defaults are not
    passed), or None with the reason added to ``tried``."""
    at = f" at revision {revision}" if revision else ""
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError:
        tried.append(f"fetching the Hugging Face {repo_type} repo{at} needs huggingface_hub "
                     "(pip install 'kidata[model]')")
        return None
    options: dict = {}
    if hub_files is not None:
        options["allow_patterns"] = list(hub_files)
    if repo_type != "model":
        options["repo_type"] = repo_type
    if revision is not None:
        options["revision"] = revision
    try:
        return Path(snapshot_download(repo_id, **options))
    except Exception as error:  # noqa: BLE001 - offline, unknown repo, no access: one sentence
        tried.append(f"the Hugging Face {repo_type} repo{at} is not in the hub cache and could not be fetched "
                     f"({_quoted(error)}); the hub cache looked in: {constants.HF_HUB_CACHE}")
        return None


def _from_url(url: str, tried: list[str]) -> Path | None:
    """A local copy of the file or folder at ``url``, of the same name (``<cache>/<url key>/<name>``;
    the cached one when there is one), or None with the reason added to ``tried``. The copy is made
    in a temporary folder beside the cache entry and renamed into place, so an interrupted download
    is never taken for a complete one."""
    try:
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        fs, remote = fsspec.core.url_to_fs(url)
        if isinstance(fs, LocalFileSystem):
            if fs.exists(remote):
                return Path(remote)
            tried.append(f"{remote} does not exist")
            return None
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", url)[-80:] + "-" + hashlib.sha256(url.encode()).hexdigest()[:12]
        entry = download_cache() / name
        remote = remote.rstrip("/")
        leaf = remote.rsplit("/", 1)[-1] or "download"
        if (entry / leaf).exists():
            return entry / leaf
        if fs.isdir(remote):
            return _copied(entry, leaf, lambda copy: fs.get(remote + "/", str(copy) + "/", recursive=True))
        if fs.isfile(remote):
            return _copied(entry, leaf, lambda copy: fs.get(remote, str(copy)))
        tried.append(f"nothing at the URL ({type(fs).__name__} has no {remote})")
    except Exception as error:  # noqa: BLE001 - no filesystem driver, no access, no network: one sentence
        tried.append(f"the URL could not be read ({_quoted(error)})")
    return None


def _copied(entry: Path, leaf: str, get: Callable[[Path], object]) -> Path:
    """``entry / leaf`` after ``get(path)`` wrote the copy to ``path``, inside a temporary folder
    beside ``entry`` that is renamed to ``entry`` once complete (removed if ``get`` fails; when
    another process renamed its copy first, that one is kept and ours removed)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        get(folder / leaf)
        try:
            folder.rename(entry)
        except OSError:
            if not (entry / leaf).exists():  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # already gone after the rename
    return entry / leaf
