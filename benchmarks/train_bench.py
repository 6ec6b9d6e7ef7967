"""Is the training loop data-bound? Steps/s of ``kidata train`` on the tiny preset with the mixture
loader in the loop, next to the same optimizer steps on one pre-collated batch, in one run.

    python benchmarks/train_bench.py [--steps 60 --workers 1]

Builds a 96x96 two-camera mixture from a generated RLDS dataset (build_bench.py's generator),
trains ``model/ki_tiny.toml`` for ``--steps`` steps through ``kidata.training.trainer.train`` (loader
with ``--workers`` DataLoader workers), then times forward + backward + clip + AdamW on a batch
collated once. The loop is not data-bound when the two rates are close. Record results on
docs/results/training-speed.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import build_bench  # noqa: E402
import torch  # noqa: E402

from kidata.loader.collate import trim_token_padding  # noqa: E402
from kidata.manifest import Manifest  # noqa: E402
from kidata.model.ki_model import KIModel  # noqa: E402
from kidata.pipelines.build import build  # noqa: E402
from kidata.pipelines.recipe import load_recipe  # noqa: E402
from kidata.training.config import load  # noqa: E402
from kidata.training.trainer import _loader, flow_inputs, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    print(f"kidata train benchmark, {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        dataset = build_bench.write_dataset(root / "data", 12, 40)
        recipe_path = build_bench.recipe(root / "r.toml", dataset, image_size=96)
        build(load_recipe(recipe_path), str(root / "out"), progress=False)
        manifest_path = str(root / "out" / "manifest.json")
        manifest, _ = Manifest.read(manifest_path)
        config = load("ki_tiny", {
            "data": {"manifest": manifest_path, "num_workers": args.workers, "cameras": ["base_0", "left_wrist_0"]},
            "train": {"steps": args.steps}, "eval": {"every": 0}, "checkpoint": {"every": 10 * args.steps},
            "log": {"progress": False, "tensorboard": False}, "model": {"state_dim": 8, "action_dim": 8}})
        began = time.perf_counter()
        report = train(config, root / "run")
        wall = time.perf_counter() - began
        looped = report["final"]["steps_per_s"]  # the last 50 steps' rate, after warm-up

        _, loader = _loader(config, manifest_path, "train", 0, 1, manifest, batch_size=config.data.batch_size,
                            workers=0, augment=True)
        batch = trim_token_padding(next(iter(loader)))  # as the loop trains on it
        torch.manual_seed(0)
        model = KIModel(config.model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        times = []
        for step in range(args.steps):
            start = time.perf_counter()
            noise, t = flow_inputs(0, 0, step, 0, tuple(batch["actions"].shape))
            model(batch, noise=noise, t=t)["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
        fixed = 1.0 / (sum(times[-50:]) / len(times[-50:]))
    batch_size = config.data.batch_size
    print(f"tiny preset, batch {batch_size}, 2 cameras 96x96, horizon 10; {args.steps} steps, "
          f"{args.workers} loader worker(s)")
    print(f"  with the loader in the loop:  {looped:6.2f} steps/s  {looped * batch_size:7.1f} samples/s "
          f"(whole run incl. start-up {wall:.1f} s)")
    print(f"  pre-collated batch:           {fixed:6.2f} steps/s  {fixed * batch_size:7.1f} samples/s")
    print(f"  loop / pre-collated: {looped / fixed:.2f} (1.00 = not data-bound)")


if __name__ == "__main__":
    main()
