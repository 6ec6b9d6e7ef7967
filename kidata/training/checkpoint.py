"""Training checkpoints without pickle: every tensor in safetensors, everything else in JSON.

A checkpoint is a directory ``RUN/checkpoints/step_NNNNNNN/``:

=========================  =================================================================
model.safetensors          full (unsharded) fp32 weights, our parameter names
optimizer.safetensors      AdamW moments per parameter: ``<name>.exp_avg``, ``<name>.exp_avg_sq``
ema.safetensors            weight EMA (when ``optim.ema_decay > 0``)
trainer.json               step, optimizer hyper-parameters and per-parameter step counts,
                           the data streams' state (one per rank), the config's hash
checksums.json             sha256 and size of every file above, written last
=========================  =================================================================

It is written into ``step_NNNNNNN.tmp`` and renamed when complete, then ``latest`` (a one-line
file) is replaced atomically; older checkpoints beyond ``keep`` are removed only after that. A
failure half-way (a full disk) leaves the previous checkpoint and ``latest`` untouched.

Reading back (``newest_complete``) trusts nothing: ``latest`` may name a directory that is gone,
a file may be truncated or flipped. Checkpoints are tried newest first, each verified against its
checksums; a damaged one is skipped with a notice naming the file, never silently.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch

from kidata.hashing import file_sha256

LATEST = "latest"
CHECKSUMS = "checksums.json"
REQUIRED = ("model.safetensors", "optimizer.safetensors", "trainer.json")


class CheckpointError(RuntimeError):
    """No complete checkpoint to resume from or load: names each damaged one and why."""


def checkpoint_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:07d}"


def step_dirs(run: Path) -> list[Path]:
    """Every finished checkpoint directory (not ``.tmp``), newest first."""
    folder = Path(run) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp")), reverse=True)


def holds_checkpoints(run: Path) -> bool:
    """Any trace of a checkpoint (a step directory or the ``latest`` pointer), damaged or not."""
    return bool(step_dirs(run)) or (Path(run) / "checkpoints" / LATEST).exists()


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete checkpoint (None when it is): a missing file, or a file
    whose size or sha256 differs from ``checksums.json``. Checkpoints written before checksums
    existed are checked for their files only."""
    if not path.is_dir():
        return f"{path} does not exist"
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if missing:
        return f"{path} lacks {missing}"
    if not (path / CHECKSUMS).is_file():
        return None
    try:
        expected = json.loads((path / CHECKSUMS).read_text())
    except ValueError:
        return f"{path / CHECKSUMS} is not valid JSON"
    for name, entry in sorted(expected.items()):
        file = path / name
        if not file.is_file():
            return f"{file} is missing"
        if file.stat().st_size != entry["bytes"]:
            return f"{file} has {file.stat().st_size} bytes, {entry['bytes']} were written (truncated?)"
        if file_sha256(file) != entry["sha256"]:
            return f"{file} does not match its sha256 (damaged)"
    return None


def newest_complete(run: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint that verifies, and a notice for each newer one passed over (the
    ``latest`` pointer naming a missing directory, a truncated file, ...)."""
    notices = []
    pointer = Path(run) / "checkpoints" / LATEST
    if pointer.exists():
        named = Path(run) / "checkpoints" / pointer.read_text().strip()
        if not named.is_dir():
            notices.append(f"{pointer} names {named.name}, which does not exist")
    for path in step_dirs(run):
        problem = checkpoint_problem(path)
        if problem is None:
            return path, notices
        notices.append(problem)
    return None, notices


def latest_checkpoint(run: Path) -> Path | None:
    """The newest complete checkpoint; raises ``CheckpointError`` when checkpoints exist but none
    verifies (the caller must not mistake a damaged run for a fresh one)."""
    path, notices = newest_complete(run)
    if path is None and holds_checkpoints(run):
        raise CheckpointError(f"{run} holds no complete checkpoint: " + "; ".join(notices))
    return path


def optimizer_tensors(optimizer_state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """Splits a name-keyed optimizer state dict (torch.distributed.checkpoint's
    ``get_optimizer_state_dict`` form) into tensors and JSON-able rest."""
    tensors, steps = {}, {}
    for name, state in optimizer_state["state"].items():
        for key, value in state.items():
            if key == "step":
                steps[name] = float(value)
            else:
                tensors[f"{name}.{key}"] = value.detach().to("cpu").contiguous()
    return tensors, {"param_groups": optimizer_state["param_groups"], "steps": steps}


def optimizer_state(tensors: Mapping[str, torch.Tensor], rest: Mapping[str, Any]) -> dict:
    state: dict[str, dict] = {}
    for key, value in tensors.items():
        name, _, kind = key.rpartition(".")
        state.setdefault(name, {})[kind] = value
    for name, step in rest["steps"].items():
        state.setdefault(name, {})["step"] = torch.tensor(step)
    return {"state": state, "param_groups": rest["param_groups"]}


def save_checkpoint(run: Path, step: int, *, model: Mapping[str, torch.Tensor], optimizer: Mapping[str, Any],
                    ema: Mapping[str, torch.Tensor] | None, trainer: Mapping[str, Any], keep: int) -> Path:
    """Writes a complete checkpoint atomically and prunes old ones (call on rank 0 only)."""
    from safetensors.torch import save_file

    final = checkpoint_dir(run, step)
    temporary = final.with_name(final.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in model.items()}, str(temporary / "model.safetensors"))
        tensors, rest = optimizer_tensors(optimizer)
        save_file(tensors, str(temporary / "optimizer.safetensors"))
        if ema is not None:
            save_file({k: v.detach().to("cpu").contiguous() for k, v in ema.items()}, str(temporary / "ema.safetensors"))
        (temporary / "trainer.json").write_text(json.dumps({**trainer, "optimizer": rest}, indent=2, sort_keys=True))
        sums = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in sorted(temporary.iterdir())}
        (temporary / CHECKSUMS).write_text(json.dumps(sums, indent=2, sort_keys=True))
        _fsync_dir(temporary)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        pointer = run / "checkpoints" / LATEST
        pointer_tmp = pointer.with_name(LATEST + ".tmp")
        pointer_tmp.write_text(final.name + "\n")
        os.replace(pointer_tmp, pointer)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    for old in sorted(p for p in (run / "checkpoints").glob("step_*") if not p.name.endswith(".tmp"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path) -> dict[str, Any]:
    """model / optimizer (name-keyed state dict) / ema (or None) / trainer (JSON)."""
    from safetensors.torch import load_file

    trainer = json.loads((path / "trainer.json").read_text())
    ema = load_file(str(path / "ema.safetensors")) if (path / "ema.safetensors").exists() else None
    return {"model": load_file(str(path / "model.safetensors")),
            "optimizer": optimizer_state(load_file(str(path / "optimizer.safetensors")), trainer.pop("optimizer")),
            "ema": ema, "trainer": trainer}


def _fsync_dir(directory: Path) -> None:
    for path in directory.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
