"""``kidata model memory`` against a measured training step on this CPU.

    python benchmarks/memory_check.py [--steps 2] [--openpi | --frozen-bf16]

For each case the estimate (``kidata.training.memory.plan``: fp32, no autocast, no EMA) is set
beside the measured peak of a fresh process that builds the model and runs real steps (forward,
backward, AdamW over the trained parameters). Measured: the peak of live tensor bytes from the
torch CPU allocator's own records (``torch.profiler`` with ``profile_memory=True``: every
allocation and free, summed in time order), from before the model is built to after the last
step. That is what the estimate models and what a GPU's ``max_memory_allocated`` reports; a
process's resident size adds the library code paged in and the malloc heap's slack on top
(about 110 MiB on this CPU for the tiny preset). Prints one line per case and the ratio
estimate / measured.

``--openpi`` instead prints the estimate for a pi0-shaped 2B model on one GPU (flow only, state in
the expert, 3 cameras, 48 text tokens, batch 32, bf16, activation checkpointing, no EMA) with
openpi's LoRA ranks and fully fine-tuned, beside openpi's published needs (README: LoRA > 22.5 GB,
full > 70 GB).

``--frozen-bf16`` instead measures the LoRA case under bf16 autocast (as a GPU run computes),
with its frozen linear weights stored in fp32 and in bf16 (``train.frozen_weights``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASES = [  # (preset, LoRA table or None, batch, text tokens, cameras)
    ("ki_tiny", None, 16, 48, 2),
    ("ki_metaworld", None, 32, 48, 2),
    ("ki_metaworld", {"backbone_rank": 16, "expert_rank": 32}, 32, 48, 2),
]

MEASURE = r"""
import json, sys, torch
torch.set_num_threads(1)
from kidata.model.config import ModelConfig
from kidata.model.ki_model import KIModel
from kidata.training.activations import fake_batch

preset, lora, batch, tokens, cameras, steps, bf16, frozen_bf16 = json.loads(sys.argv[1])
config = ModelConfig.load(preset, **({"lora": lora} if lora else {}))
inputs = fake_batch(config, batch, tokens, cameras)
inputs["tokens"] = torch.randint(0, config.vocab_size, inputs["tokens"].shape)
from torch.profiler import ProfilerActivity, profile

with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
    model = KIModel(config).train()
    if frozen_bf16:
        from kidata.model.lora import store_frozen_in_bf16
        store_frozen_in_bf16(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    noise, t = torch.randn_like(inputs["actions"]), torch.full((batch,), 0.5)
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(inputs, noise=noise, t=t)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
events = sorted((e for e in profiler.profiler.kineto_results.events() if e.name() == "[memory]"),
                key=lambda e: e.start_ns())
live = peak = 0
for event in events:
    live += event.nbytes()
    peak = max(peak, live)
print(json.dumps({"peak": peak}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2, help="training steps measured (AdamW state exists from the first)")
    parser.add_argument("--openpi", action="store_true", help="the pi0-shaped 2B estimates beside openpi's figures")
    parser.add_argument("--frozen-bf16", action="store_true",
                        help="the LoRA case under bf16 autocast, frozen linear weights in fp32 and in bf16")
    args = parser.parse_args()
    from kidata.model.config import ModelConfig
    from kidata.training.memory import plan

    if args.openpi:
        lora_ranks = {"backbone_rank": 16, "expert_rank": 32}
        for lora, frozen_bf16, published in ((lora_ranks, False, "> 22.5 GB (LoRA)"),
                                             (lora_ranks, True, "> 22.5 GB (LoRA, frozen weights in bf16)"),
                                             (None, False, "> 70 GB (full)")):
            config = ModelConfig.load("ki_2b", variant="pi0", state_input="expert", time_conditioning="concat",
                                      **({"lora": lora} if lora else {}))
            estimate = plan(config, batch=32, tokens=48, cameras=3, checkpointing=True, ema=False,
                            frozen_bf16=frozen_bf16)
            print(f"pi0-shaped ki_2b {'LoRA ' + json.dumps(lora) if lora else 'full fine-tuning'}"
                  f"{', frozen weights in bf16' if frozen_bf16 else ''}, batch 32, one GPU: "
                  f"estimate {estimate.total / 1e9:.1f} GB (parameters {estimate.parameters / 1e9:.1f}, gradients "
                  f"{estimate.gradients / 1e9:.1f}, AdamW {estimate.optimizer / 1e9:.1f}, bf16 copies "
                  f"{estimate.copies / 1e9:.1f}, activations {estimate.activations / 1e9:.1f}); openpi: {published}",
                  flush=True)
        return 0

    mib = 2**20
    cases = ([(*CASES[-1], True, frozen) for frozen in (False, True)] if args.frozen_bf16
             else [(*case, False, False) for case in CASES])
    for preset, lora, batch, tokens, cameras, bf16, frozen_bf16 in cases:
        config = ModelConfig.load(preset, **({"lora": lora} if lora else {}))
        estimate = plan(config, batch=batch, tokens=tokens, cameras=cameras, bf16=bf16, ema=False,
                        frozen_bf16=frozen_bf16)
        result = subprocess.run([sys.executable, "-c", MEASURE, json.dumps([preset, lora, batch, tokens, cameras,
                                                                             args.steps, bf16, frozen_bf16])],
                                capture_output=True, text=True, check=True)
        measured = json.loads(result.stdout.strip().splitlines()[-1])["peak"]
        precision = ("bf16 autocast CPU, frozen linear weights in " + ("bf16" if frozen_bf16 else "fp32")
                     if bf16 else "fp32 CPU")
        copies = f", bf16 copies {estimate.copies / mib:.1f}" if bf16 else ""
        print(f"{preset}{' + LoRA ' + json.dumps(lora) if lora else ''}, batch {batch}, {cameras} images + {tokens} "
              f"tokens, {precision}: estimate {estimate.total / mib:.1f} MiB (parameters "
              f"{estimate.parameters / mib:.1f}, gradients {estimate.gradients / mib:.1f}, AdamW "
              f"{estimate.optimizer / mib:.1f}{copies}, activations {estimate.activations / mib:.1f}); measured peak "
              f"{measured / mib:.1f} MiB; estimate / measured {estimate.total / measured:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
