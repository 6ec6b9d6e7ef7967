"""What cutting token padding saves: training-step time on batches padded to the mixture's
max_tokens (as collate returns them) next to the same batches cut to their longest row
(``kidata.loader.collate.trim_token_padding``, what ``kidata train`` runs), in one run.

    python benchmarks/padding_bench.py --manifest /tmp/mwd/manifest.json --preset model/ki_metaworld.toml

Loads ``--batches`` training batches of the preset's batch size once, then times forward +
backward + AdamW on each, padded and trimmed alternately (so the machine's drift hits both), and
checks that both give the same loss. Record results on its topic page in docs/results/.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from kidata.loader.collate import trim_token_padding
from kidata.manifest import Manifest
from kidata.model.ki_model import KIModel
from kidata.training.config import load
from kidata.training.trainer import _loader, flow_inputs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifest", required=True, help="a built mixture's manifest.json")
    parser.add_argument("--preset", default="model/ki_metaworld.toml")
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = load(args.preset, {"data": {"manifest": args.manifest}})
    manifest, _ = Manifest.read(args.manifest)
    _, loader = _loader(config, args.manifest, "train", 0, 1, manifest, batch_size=config.data.batch_size,
                        workers=0, augment=True)
    stream = iter(loader)
    batches = [next(stream) for _ in range(args.batches)]
    lengths = torch.cat([b["token_mask"].sum(dim=1) for b in batches]).float()
    torch.manual_seed(0)
    model = KIModel(config.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch: dict, index: int) -> float:
        noise, t = flow_inputs(0, 0, index, 0, tuple(batch["actions"].shape))
        loss = model(batch, noise=noise, t=t)["loss"]
        loss.backward()
        optimizer.zero_grad(set_to_none=True)  # no update: every timed step sees the same weights
        return float(loss.detach())

    seconds = {"padded": 0.0, "trimmed": 0.0}
    for index, batch in enumerate(batches[:2]):  # warm-up
        step(batch, index)
        step(trim_token_padding(batch), index)
    for _ in range(args.rounds):
        for index, batch in enumerate(batches):
            for name, view in (("padded", batch), ("trimmed", trim_token_padding(batch))):
                began = time.perf_counter()
                loss = step(view, index)
                seconds[name] += time.perf_counter() - began
                if name == "padded":
                    reference = loss
                elif abs(loss - reference) > 1e-5 * abs(reference):
                    raise SystemExit(f"batch {index}: trimmed loss {loss} differs from padded {reference}")
    steps = args.rounds * len(batches)
    print(f"padding benchmark, {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {args.preset}, batch {config.data.batch_size}")
    print(f"  tokens per row: mean {lengths.mean():.1f}, longest {int(lengths.max())}, "
          f"max_tokens {manifest.encoding.max_tokens}")
    for name, total in seconds.items():
        print(f"  {name:8s} fwd+bwd  {1000 * total / steps:7.1f} ms/step")
    print(f"  trimmed / padded: {seconds['trimmed'] / seconds['padded']:.2f} (1.00 = padding costs nothing); "
          "losses equal")


if __name__ == "__main__":
    main()
