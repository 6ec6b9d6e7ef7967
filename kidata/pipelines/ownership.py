"""What a build owns in its output folder: the lock that keeps a second build out while one runs,
the build id that ties the manifest, the action tokenizer and every shard to one build, and the
list of paths ``--force`` may remove (only what a kidata build wrote; anything else is the user's).

The lock is ``OUT/build.lock`` holding the holder's pid, host and start time. On a local folder it
is created atomically (``O_EXCL``); on object stores (s3://, gs://) there is no atomic create, so
it is advisory there and ``kidata verify``'s build-id check is what catches a mixed output. A lock
whose holder is gone (same host, pid not running) is stale: it is named on stderr and replaced.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from typing import Iterable

from kidata.hashing import json_sha256
from kidata.manifest import ACTION_TOKENIZER_DIR, BUILD_REPORT_FILE, MANIFEST_FILE
from kidata.pipelines.stats_pass import STATE_DIR, BuildError

LOCK_NAME = "build.lock"
BUILD_ID_FILE = "kidata_build.json"  # in the action tokenizer folder: {"build_id": ...}
# top-level entries a build writes (whole folders for the directories; ``inspect``: the pictures
# ``kidata inspect OUT`` and ``kidata demo`` save beside the build); source folders are checked file by file
BUILD_FILES = (MANIFEST_FILE, BUILD_REPORT_FILE, LOCK_NAME, STATE_DIR, "norm_stats", ACTION_TOKENIZER_DIR, "inspect")
_SHARD_NAME = r"-(train|val)-u\d{4}-\d{5}\.tar(\.tmp)?"
_TEMPORARY = re.compile(rf"^({re.escape(MANIFEST_FILE)}|{re.escape(BUILD_REPORT_FILE)})\.tmp$")


def build_id(recipe_sha256: str, action_tokenizer_files: dict[str, str]) -> str:
    """16 hex digits naming one build: derived from the recipe and the action tokenizer the samples
    were encoded with, so a resumed or repeated build of the same recipe on the same data writes
    the same bytes, and a build of another recipe (or a tokenizer fitted on other data) differs."""
    return json_sha256({"recipe_sha256": recipe_sha256, "action_tokenizer": action_tokenizer_files})[:16]


class BuildLock:
    """``with BuildLock(fs, root, out):`` holds ``OUT/build.lock`` for the block."""

    def __init__(self, fs, root: str, out: str) -> None:
        self.fs, self.path, self.out = fs, f"{root}/{LOCK_NAME}", out
        self.held = False

    def __enter__(self) -> "BuildLock":
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                            time.gmtime())}
        for _ in range(2):
            if self._create(json.dumps(holder, sort_keys=True)):
                self.held = True
                return self
            other = self._holder()
            if not _stale(other):
                raise BuildError(f"{self.out} is being built by pid {other.get('pid')} on host {other.get('host')} "
                                 f"(since {other.get('started')}; lock file {self.path}): wait for that build, or "
                                 "delete the lock file if it is no longer running")
            holder_text = (f"was left by pid {other.get('pid')} on {other.get('host')}, which is no longer running"
                           if other else "is unreadable (its writer stopped while writing it)")
            print(f"build: {self.path} {holder_text}; taking the lock over", file=sys.stderr)
            self.fs.rm(self.path)
        raise BuildError(f"{self.out}: could not take the lock {self.path}; another build took it first")

    def __exit__(self, *exc) -> None:
        if self.held:
            try:
                self.fs.rm(self.path)
            except FileNotFoundError:
                pass
            self.held = False

    def _create(self, text: str) -> bool:
        directory = self.path.rsplit("/", 1)[0]
        try:
            self.fs.makedirs(directory, exist_ok=True)
        except OSError as error:
            raise BuildError(f"{self.out}: cannot write the build there ({type(error).__name__}: "
                             f"{error.strerror or error}); choose a writable --out") from error
        if _is_local(self.fs):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            except OSError as error:
                raise BuildError(f"{self.out}: cannot write the build there ({type(error).__name__}: "
                                 f"{error.strerror or error}); choose a writable --out") from error
            with os.fdopen(descriptor, "w") as handle:
                handle.write(text)
            return True
        if self.fs.exists(self.path):  # object stores: no atomic create (see the module's docstring)
            return False
        with self.fs.open(self.path, "w") as handle:
            handle.write(text)
        return True

    def _holder(self) -> dict:
        try:
            holder = json.loads(self.fs.cat_file(self.path).decode())
            return holder if isinstance(holder, dict) else {}
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            return {}


def _is_local(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _stale(holder: dict) -> bool:
    """True when the lock's holder ran on this host and is gone (an unreadable lock is stale too:
    its writer died between creating and filling it)."""
    if not holder:
        return True
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def foreign_paths(fs, root: str, source_names: Iterable[str]) -> tuple[list[str], list[str]]:
    """(what a build wrote, everything else) in the output folder ``root``, as paths relative to
    it: the top-level files and folders a build names (``BUILD_FILES``) and, in each source's
    folder, the shards named ``<source>-<split>-uNNNN-NNNNN.tar``."""
    owned, foreign = [], []
    names = set(source_names)
    if not fs.exists(root):
        return owned, foreign
    for entry in sorted(fs.ls(root, detail=True), key=lambda e: e["name"]):
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if name in BUILD_FILES or _TEMPORARY.match(name):
            owned.append(name)
        elif name in names and entry["type"] == "directory":
            shard = re.compile(re.escape(name) + _SHARD_NAME)
            for path in sorted(fs.find(entry["name"], withdirs=False)):
                relative = path[len(root) + 1:]
                (owned if shard.fullmatch(relative.rsplit("/", 1)[-1]) and relative.count("/") == 1
                 else foreign).append(relative)
            if not any(p.startswith(f"{name}/") for p in foreign):
                owned.append(name)
        else:
            foreign.append(name + ("/" if entry["type"] == "directory" else ""))
    return owned, foreign


def remove_build(fs, root: str, out: str, source_names: Iterable[str]) -> None:
    """Removes what a kidata build wrote in ``root`` (the lock excepted: it is this build's now);
    refuses, naming them, when anything else is there."""
    owned, foreign = foreign_paths(fs, root, source_names)
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise BuildError(f"{out} holds files no kidata build wrote ({shown}); --force removes only a build's "
                         "own files: move those elsewhere or choose another --out")
    for name in owned:
        if name != LOCK_NAME:
            fs.rm(f"{root}/{name}", recursive=True)
