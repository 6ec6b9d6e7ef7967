"""Training checkpoints without pickle: every tensor in safetensors, everything else in JSON.

A checkpoint is a directory ``RUN/checkpoints/step_NNNNNNN/``:

=========================  =================================================================
model.safetensors          full (unsharded) fp32 weights, our parameter names
optimizer.safetensors      AdamW moments per parameter: ``<name>.exp_avg``, ``<name>.exp_avg_sq``
ema.safetensors            weight EMA (when ``optim.ema_decay > 0``)
trainer.json               step, optimizer hyper-parameters and per-parameter step counts,
                           the data streams' state (one per rank), the config's hash
=========================  =================================================================

It is written into ``step_NNNNNNN.tmp`` and renamed when complete, then ``latest`` (a one-line
file) is replaced atomically; older checkpoints beyond ``keep`` are removed only after that. A
failure half-way (a full disk) leaves the previous checkpoint and ``latest`` untouched.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch

LATEST = "latest"


def checkpoint_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:07d}"


def latest_checkpoint(run: Path) -> Path | None:
    pointer = run / "checkpoints" / LATEST
    if not pointer.exists():
        return None
    path = run / "checkpoints" / pointer.read_text().strip()
    return path if path.exists() else None


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
