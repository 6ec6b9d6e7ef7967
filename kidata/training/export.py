"""One consolidated safetensors file of a run's weights (``kidata export weights``).

A checkpoint holds fp32 tensors under our parameter names, whole or (FSDP2) as shards gathered
here; the export picks the checkpoint, swaps in the weight EMA where the run kept one (what
``kidata.policy.load`` serves), and records the model config in the file's metadata, so the file
alone rebuilds the model: ``KIModel(ModelConfig(**json.loads(metadata["kidata_model_config"])))``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from kidata.training.run_dir import RunDir


def export_weights(run: Path, out: Path, *, checkpoint: Path | None = None, use_ema: bool = True,
                   merge_lora: bool = False) -> dict:
    """``merge_lora``: a LoRA run's adapters folded into the base weights, the file then describing
    an unadapted model (``lora`` None in its config)."""
    from safetensors.torch import save_file

    run_dir = RunDir(run).require_run()
    config = run_dir.config()
    # verified, then whole or an FSDP2 run's shards gathered here: the policy's loader
    path, tensors, ema = run_dir.weights(checkpoint, use_ema=use_ema)
    model_config = config.model
    if merge_lora and model_config.lora is not None:
        from kidata.model.lora import merge_tensors

        tensors, model_config = merge_tensors(tensors, model_config.lora), replace(model_config, lora=None)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".tmp")
    metadata = {"format": "pt", "kidata_model_config": json.dumps(asdict(model_config), sort_keys=True),
                "kidata_checkpoint": str(path), "kidata_weights": "ema" if ema else "trained"}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(temporary), metadata=metadata)
    temporary.replace(out)
    return {"path": str(out), "tensors": len(tensors), "parameters": sum(t.numel() for t in tensors.values()),
            "ema": ema, "checkpoint": str(path), "merged_lora": model_config is not config.model}
