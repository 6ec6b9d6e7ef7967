"""Training-step cost of the paper's recipes, and action sampling latency.

    python benchmarks/model_bench.py [--preset model/ki_tiny.toml --batch 8 --steps 20]
    python benchmarks/model_bench.py --preset model/ki_2b.toml --device cuda --dtype bfloat16 --batch 8 --optimizer

Prints, in one run and for the same weights: forward+backward ms per step for ``ki``, ``joint``,
``pi0``, ``pi0_fast`` (KI's cost relative to flow-only training is the figure the paper reports as
~1.2x), tokens/s, model TFLOP per step counted per part (``kidata.model.flops``: image tokens
through SigLIP, prefix and text through the decoder, the LM head only at loss-masked targets,
actions through the expert), MFU on CUDA (those FLOPs / s over the GPU's peak), and the latency of
``sample_actions`` (two cameras, 10 Euler steps, KV cache) next to recomputing the prefix every
step. A variant without a token loss (``pi0``) gets the prompt alone: no FAST tokens, no LM head.
``--optimizer`` times whole training steps (AdamW with fp32 master weights included) and, on CUDA,
reports each variant's peak memory; a variant that runs out of memory prints so, and the next
one runs: what ``benchmarks/gpu_check.sh`` runs.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from kidata import assets
from kidata.model.config import ModelConfig
from kidata.model.flops import StepShape, training_flops
from kidata.model.ki_model import KIModel
from kidata.model.weights import parameter_counts

ROOT = Path(__file__).resolve().parents[1]
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def make_batch(config: ModelConfig, batch: int, text: int, prefix: int, device, cameras: int = 2) -> dict:
    g = torch.Generator().manual_seed(0)
    ar = torch.zeros(batch, text, dtype=torch.bool)
    ar[:, prefix:] = True
    out = {
        "images": torch.rand(batch, cameras, 3, config.image_size, config.image_size, generator=g) * 2 - 1,
        "image_mask": torch.ones(batch, cameras, dtype=torch.bool),
        "tokens": torch.randint(3, config.vocab_size - 1, (batch, text), generator=g), "ar": ar, "loss": ar.clone(),
        "token_mask": torch.ones(batch, text, dtype=torch.bool),
        "state": torch.randn(batch, config.state_dim, generator=g),
        "state_dim_mask": torch.ones(batch, config.state_dim, dtype=torch.bool),
        "actions": torch.randn(batch, config.action_horizon, config.action_dim, generator=g),
        "action_valid": torch.ones(batch, config.action_horizon, dtype=torch.bool),
        "action_dim_mask": torch.ones(batch, config.action_dim, dtype=torch.bool),
        "has_actions": torch.ones(batch, dtype=torch.bool),
    }
    return {key: value.to(device) for key, value in out.items()}


def variant_batch(batch: dict, config: ModelConfig, prefix: int) -> dict:
    """The batch a variant trains on: without a token loss (pi0, frozen) the prompt alone, as
    openpi's pi0 sees it (FAST tokens and their LM head would only inflate its step)."""
    if config.fast_loss:
        return batch
    prompt = {key: batch[key][:, :prefix] for key in ("tokens", "ar", "loss", "token_mask")}
    return {**batch, **prompt, "ar": torch.zeros_like(prompt["ar"]), "loss": torch.zeros_like(prompt["loss"])}


def step_shape(batch: dict) -> StepShape:
    return StepShape(batch=len(batch["tokens"]), cameras=batch["images"].shape[1], text=batch["tokens"].shape[1],
                     loss_tokens=int(batch["loss"][:, 1:].sum()) // len(batch["tokens"]))


def timed(fn, steps: int, device) -> float:
    fn()  # warm-up
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def run_variant(config: ModelConfig, inputs: dict, args, device, dtype) -> tuple[float, int]:
    """Seconds per training step (forward, backward, and AdamW with ``--optimizer``) and the CUDA
    peak memory in bytes (0 elsewhere). Model and optimizer are freed on return, OOM included."""
    torch.manual_seed(0)
    model = KIModel(config).to(device)
    model.activation_checkpointing = args.checkpointing
    model.train()
    optimizer = (torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5,
                                   fused=device.type == "cuda") if args.optimizer else None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(inputs)["loss"]
        loss.backward()
        if optimizer is not None:
            optimizer.step()
        model.zero_grad(set_to_none=True)

    try:
        seconds = timed(step, args.steps, device)
        return seconds, torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    finally:  # an OOM's traceback keeps this frame alive: drop the model and its state from it now
        model.zero_grad(set_to_none=True)
        model = optimizer = None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default=str(assets.ROOT / "model" / "ki_tiny.toml"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text", type=int, default=64, help="text tokens per sample (prompt + targets)")
    parser.add_argument("--prefix", type=int, default=24, help="prompt tokens among them")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--optimizer", action="store_true", help="time the AdamW step too (a whole training step)")
    parser.add_argument("--variants", default="ki,joint,pi0,pi0_fast")
    parser.add_argument("--checkpointing", action="store_true",
                        help="activation checkpointing (recompute each layer in backward), as train.activation_checkpointing")
    parser.add_argument("--half-batch", action="store_true",
                        help="also time the first variant at half the batch: is a step's cost proportional to its batch?")
    args = parser.parse_args()
    if args.half_batch and args.batch < 2:
        parser.error(f"--half-batch needs --batch 2 or more (got --batch {args.batch}: half of it is empty)")
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    base = ModelConfig.load(args.preset)
    print(f"kidata model benchmark, {platform.machine()}, torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else f", {torch.get_num_threads()} threads"))
    print(f"preset {Path(args.preset).name}: batch {args.batch}, 2 cameras, {args.text} text tokens "
          f"({args.prefix} prompt), horizon {base.action_horizon}, dtype {args.dtype}")
    batch = make_batch(base, args.batch, args.text, args.prefix, device)
    results = {}
    runs = [(variant, batch) for variant in args.variants.split(",")]
    if args.half_batch:
        runs.append((runs[0][0], {key: value[: args.batch // 2] for key, value in batch.items()}))
    for variant, whole in runs:
        config = ModelConfig.load(args.preset, variant=variant)
        inputs = variant_batch(whole, config, args.prefix)
        size = len(inputs["tokens"])
        try:
            seconds, peak_memory = run_variant(config, inputs, args, device, dtype)
        except torch.OutOfMemoryError:
            print(f"  {variant:9s} out of memory at batch {size}: lower BATCH or keep activation checkpointing on",
                  flush=True)
            continue
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        results[(variant, size)] = seconds
        shape = step_shape(inputs)
        flops = training_flops(config, shape)
        tokens = size * (shape.cameras * (config.image_size // config.patch_size) ** 2 + shape.text
                         + (config.action_horizon if config.has_expert else 0))
        what = "train step" if args.optimizer else "fwd+bwd"
        line = (f"  {variant:9s} {what} {seconds * 1e3:9.1f} ms/step  {tokens / seconds:10.0f} tokens/s  batch {size}"
                f"  {flops['total'] / 1e12:.3g} TFLOP/step")
        if device.type == "cuda":
            peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in torch.cuda.get_device_name()), None)
            if peak:
                line += f"  MFU {flops['total'] / seconds / (peak * 1e12):6.1%}"
            line += f"  peak memory {peak_memory / 2**30:.1f} GiB"
        print(line, flush=True)
        print("            TFLOP/step by part: " + ", ".join(f"{name} {value / 1e12:.3g}" for name, value in flops.items()
                                                         if name != "total"), flush=True)
    full = {variant: seconds for (variant, size), seconds in results.items() if size == args.batch}
    if {"ki", "pi0", "pi0_fast"} <= set(full):
        print(f"ki / pi0 step time: {full['ki'] / full['pi0']:.2f}x (paper: ~1.2x for KI over flow-only)"
              f"; ki / pi0_fast: {full['ki'] / full['pi0_fast']:.2f}x")
    if args.half_batch:
        variant = runs[0][0]
        print(f"{variant} step time at batch {args.batch // 2} / at batch {args.batch}: "
              f"{results[(variant, args.batch // 2)] / full[variant]:.2f} (0.50: a step costs in proportion to its batch)")

    model = KIModel(base).to(device).eval()
    prefix = {**batch, "tokens": batch["tokens"][:1, : args.prefix], "ar": batch["ar"][:1, : args.prefix],
              "token_mask": batch["token_mask"][:1, : args.prefix],
              **{k: batch[k][:1] for k in ("images", "image_mask", "state", "state_dim_mask")}}
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        cached = timed(lambda: model.sample_actions(prefix, num_steps=10), max(3, args.steps // 4), device)
        uncached = timed(lambda: model.sample_actions(prefix, num_steps=10, use_cache=False), max(3, args.steps // 4),
                         device)
    print(f"sample_actions (1 observation, 2 cameras, 10 steps): {cached * 1e3:.1f} ms with the prefix KV cache, "
          f"{uncached * 1e3:.1f} ms recomputing the prefix each step ({uncached / cached:.2f}x)")
    counts = parameter_counts(base)
    print("parameters: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items()))


if __name__ == "__main__":
    main()
