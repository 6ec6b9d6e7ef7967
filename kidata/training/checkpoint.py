"""Training checkpoints without pickle: every tensor in safetensors, everything else in JSON.

A checkpoint is a directory ``RUN/checkpoints/step_NNNNNNN/``:

=========================  =================================================================
model.safetensors          full (unsharded) fp32 weights, our parameter names
optimizer.safetensors      AdamW moments per parameter: ``<name>.exp_avg``, ``<name>.exp_avg_sq``
ema.safetensors            weight EMA (when ``optim.ema_decay > 0``)
trainer.json               step, optimizer hyper-parameters and per-parameter step counts,
                           the data streams' state (one per stream), the config's hash
checksums.json             sha256 and size of every file above, written last
=========================  =================================================================

Under FSDP2 the three tensor files are folders instead (``model/``, ``optimizer/``, ``ema/``),
written by ``torch.distributed.checkpoint`` with its Hugging Face storage: each rank writes its own
shard as safetensors, the sharding recorded in each file's header (no pickle), so saving and
loading scale with the shard and a checkpoint saved on N processes reads on any other number
(``read_full`` gathers it whole on one process: the policy, ``kidata export weights``).

Checksums of a sharded checkpoint are computed where the shards are written: each rank hashes
its own share of the shard files (``hash_share``: with DCP's rank-ordered names, the files it
wrote), and rank 0 merges them and hashes only what it wrote itself (``trainer.json``), so no
rank reads the whole checkpoint back. Resuming reads through ``torch.distributed.checkpoint``
from either layout (``part_reader``): each rank reads only the slices its parameters, optimizer
moments and EMA hold.

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

CHECKPOINTS_DIR = "checkpoints"  # in the run directory (``kidata.training.run_dir``)
LATEST = "latest"
CHECKSUMS = "checksums.json"
REQUIRED = ("model.safetensors", "optimizer.safetensors", "trainer.json")
SHARDED_REQUIRED = ("model", "optimizer", "trainer.json")  # folders of shards under FSDP2


class CheckpointError(RuntimeError):
    """No complete checkpoint to resume from or load: names each damaged one and why."""


def checkpoints_folder(run: Path) -> Path:
    """The run's ``checkpoints/`` folder."""
    return Path(run) / CHECKPOINTS_DIR


def checkpoint_dir(run: Path, step: int) -> Path:
    return checkpoints_folder(run) / f"step_{step:07d}"


def step_dirs(run: Path) -> list[Path]:
    """Every finished checkpoint directory (not ``.tmp``), newest first."""
    folder = checkpoints_folder(run)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp")), reverse=True)


def holds_checkpoints(run: Path) -> bool:
    """Any trace of a checkpoint (a step directory or the ``latest`` pointer), damaged or not."""
    return bool(step_dirs(run)) or (checkpoints_folder(run) / LATEST).exists()


def is_sharded(path: Path) -> bool:
    """Whether a checkpoint holds shard folders (an FSDP2 run) rather than whole files."""
    return (Path(path) / "model").is_dir()


def read_full(path: Path, part: str) -> dict[str, torch.Tensor] | None:
    """Whole tensors of ``part`` ("model", "optimizer" or "ema") of a checkpoint in either layout,
    on this process alone; None when the checkpoint has no such part."""
    from safetensors.torch import load_file

    file = Path(path) / f"{part}.safetensors"
    if file.is_file():
        return load_file(str(file))
    folder = Path(path) / part
    if not folder.is_dir():
        return None
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    metadata = HuggingFaceStorageReader(str(folder)).read_metadata().state_dict_metadata
    tensors = {name: torch.empty(entry.size, dtype=entry.properties.dtype) for name, entry in metadata.items()}
    dcp.load(tensors, storage_reader=HuggingFaceStorageReader(str(folder)), no_dist=True)
    return tensors


def read_weights(path: Path, *, use_ema: bool = True) -> tuple[dict[str, torch.Tensor], bool]:
    """A checkpoint's whole weights, the EMA's in place of the trained ones when kept and
    ``use_ema`` (what the policy serves and ``kidata export weights`` writes), and whether the EMA
    was used."""
    tensors = read_full(path, "model")
    if tensors is None:
        raise FileNotFoundError(f"{path}: no checkpoint there (neither model.safetensors nor model/ shards); "
                                f"{_checkpoints_beside(Path(path))}")
    averaged = read_full(path, "ema") if use_ema else None
    if averaged is not None:
        tensors.update({name: value.to(tensors[name].dtype) for name, value in averaged.items()})
    return tensors, averaged is not None


def read_run_weights(run: Path, checkpoint: Path | None = None, *, use_ema: bool = True
                     ) -> tuple[Path, dict[str, torch.Tensor], bool]:
    """The one way a run's weights are read for use (the policy, ``kidata serve``, ``kidata export
    weights``): the checkpoint named, or else the newest complete one, verified against its
    checksums before a byte is used (``CheckpointError`` naming the damaged file); returns the
    checkpoint, its weights (``read_weights``) and whether they are the EMA's."""
    path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(Path(run))
    if path is None:
        raise CheckpointError(f"{run} has no checkpoint yet: its training writes one every checkpoint.every steps and "
                              "at its last; use the run once it has one (kidata train --out RUN --resume continues it)")
    if (path / "model.safetensors").is_file() or is_sharded(path):  # else read_weights names the run's checkpoints
        problem = checkpoint_problem(path)
        if problem is not None:
            raise CheckpointError(f"{path} cannot be used: {problem}; pass another checkpoint of the run, or the "
                                  "run alone for its newest complete one")
    tensors, ema = read_weights(path, use_ema=use_ema)
    return path, tensors, ema


def _checkpoints_beside(path: Path) -> str:
    """What to pass instead of a wrong checkpoint path: the checkpoint folders next to it."""
    found = [step.name for step in reversed(step_dirs(path.parent.parent))]  # the run's, oldest first
    if not found:
        return "pass a folder RUN/checkpoints/step_NNNNNNN, or name the run alone for its newest checkpoint"
    return f"{path.parent} holds {', '.join(found)}; pass one of them, or name the run alone for its newest"


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete checkpoint (None when it is): a missing file, or a file
    whose size or sha256 differs from ``checksums.json``. Checkpoints written before checksums
    existed are checked for their files only."""
    if not path.is_dir():
        return f"{path} does not exist"
    required = SHARDED_REQUIRED if is_sharded(path) else REQUIRED
    missing = [name for name in required if not (path / name).exists()]
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
    pointer = checkpoints_folder(run) / LATEST
    if pointer.exists():
        named = checkpoints_folder(run) / pointer.read_text().strip()
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


def begin_checkpoint(run: Path, step: int) -> Path:
    """The empty ``.tmp`` folder a checkpoint is written into (call on rank 0 only)."""
    temporary = checkpoint_dir(run, step).with_name(checkpoint_dir(run, step).name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    return temporary


def write_whole(temporary: Path, *, model: Mapping[str, torch.Tensor], optimizer: Mapping[str, Any],
                ema: Mapping[str, torch.Tensor] | None) -> dict:
    """The three tensor files of a whole-tensor checkpoint; returns the optimizer's JSON part."""
    from safetensors.torch import save_file

    save_file({k: v.detach().to("cpu").contiguous() for k, v in model.items()}, str(temporary / "model.safetensors"))
    tensors, rest = optimizer_tensors(optimizer)
    save_file(tensors, str(temporary / "optimizer.safetensors"))
    if ema is not None:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in ema.items()}, str(temporary / "ema.safetensors"))
    return rest


def write_shards(temporary: Path, *, model: Mapping[str, torch.Tensor], optimizer: Mapping[str, Any],
                 ema: Mapping[str, torch.Tensor] | None) -> dict:
    """Every rank's shards (DTensor state dicts) into ``model/``, ``optimizer/``, ``ema/`` (a
    collective: all ranks call it); returns the optimizer's JSON part."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    tensors, rest = optimizer_tensors(optimizer)
    parts = {"model": dict(model), "optimizer": tensors, **({"ema": dict(ema)} if ema is not None else {})}
    for name, state in parts.items():
        dcp.save(state, storage_writer=HuggingFaceStorageWriter(str(temporary / name), save_distributed=True))
    return rest


SHARD_PARTS = ("model", "optimizer", "ema")


def file_checksum(path: Path) -> dict:
    """A checksums.json entry: size and sha256 of one file."""
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


def hash_share(temporary: Path, rank: int, world: int) -> dict[str, dict]:
    """Checksums of this rank's share of a sharded checkpoint's shard files (call on every rank
    once all have written): the sorted files, every ``world``-th from ``rank`` on. DCP names each
    rank's shards by its rank (``shard-0000{rank+1}-...``) and every rank writes one per part, so
    a rank hashes the shards it wrote itself; in any case every file is hashed exactly once."""
    files = sorted(path for part in SHARD_PARTS if (temporary / part).is_dir()
                   for path in (temporary / part).rglob("*") if path.is_file())
    return {str(path.relative_to(temporary)): file_checksum(path) for path in files[rank::world]}


def finish_checkpoint(run: Path, step: int, temporary: Path, *, trainer: Mapping[str, Any], optimizer_rest: dict,
                      keep: int, hashed: Mapping[str, dict] | None = None) -> Path:
    """trainer.json, checksums of every file, the rename, ``latest``, pruning (rank 0 only).
    ``hashed``: the checksums the ranks already computed (``hash_share``); only the other files
    are hashed here."""
    final = checkpoint_dir(run, step)
    try:
        (temporary / "trainer.json").write_text(json.dumps({**trainer, "optimizer": optimizer_rest}, indent=2, sort_keys=True))
        files = sorted(p for p in temporary.rglob("*") if p.is_file())
        known = dict(hashed or {})
        sums = {name: known.get(name) or file_checksum(p)
                for name, p in ((str(p.relative_to(temporary)), p) for p in files)}
        (temporary / CHECKSUMS).write_text(json.dumps(sums, indent=2, sort_keys=True))
        _fsync_dir(temporary)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        pointer = checkpoints_folder(run) / LATEST
        pointer_tmp = pointer.with_name(LATEST + ".tmp")
        pointer_tmp.write_text(final.name + "\n")
        os.replace(pointer_tmp, pointer)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    for old in sorted(p for p in checkpoints_folder(run).glob("step_*") if not p.name.endswith(".tmp"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_checkpoint(run: Path, step: int, *, model: Mapping[str, torch.Tensor], optimizer: Mapping[str, Any],
                    ema: Mapping[str, torch.Tensor] | None, trainer: Mapping[str, Any], keep: int) -> Path:
    """Writes a complete whole-tensor checkpoint atomically and prunes old ones (rank 0 only)."""
    temporary = begin_checkpoint(run, step)
    try:
        rest = write_whole(temporary, model=model, optimizer=optimizer, ema=ema)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return finish_checkpoint(run, step, temporary, trainer=trainer, optimizer_rest=rest, keep=keep)


def part_reader(path: Path, part: str) -> Any:
    """A ``torch.distributed.checkpoint`` storage reader over ``part`` ("model", "optimizer" or
    "ema") of a checkpoint in either layout, or None when the checkpoint has no such part: the
    Hugging Face safetensors reader over the part's shard folder, or over its one whole-tensor
    file. Either way each rank reads only the slices it asks for."""
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    folder, file = Path(path) / part, Path(path) / f"{part}.safetensors"
    if folder.is_dir():
        return HuggingFaceStorageReader(str(folder))
    if not file.is_file():
        return None
    reader = HuggingFaceStorageReader(str(file.parent))
    # the reader takes every .safetensors file its folder lists; model and ema share tensor names
    reader.fs.ls = lambda _folder: [str(file)]
    return reader


def load_checkpoint(path: Path) -> dict[str, Any]:
    """model / optimizer (name-keyed state dict) / ema (or None) / trainer (JSON), whole tensors,
    from either layout."""
    trainer = json.loads((path / "trainer.json").read_text())
    return {"model": read_full(path, "model"),
            "optimizer": optimizer_state(read_full(path, "optimizer"), trainer.pop("optimizer")),
            "ema": read_full(path, "ema"), "trainer": trainer}


def _fsync_dir(directory: Path) -> None:
    for path in (p for p in directory.rglob("*") if p.is_file()):
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
