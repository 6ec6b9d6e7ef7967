"""What a run writes about itself: metrics.jsonl, TensorBoard, a progress bar, loss curves and the
final report."""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import types
from pathlib import Path

import numpy as np

from kidata.manifest import Manifest
from kidata.training.config import TrainConfig
from kidata.training.run_dir import RunDir, metrics_lines


def truncate_metrics(path: Path, step: int) -> None:
    """A resumed run repeats the steps after its checkpoint: their old records go, so that
    metrics.jsonl holds each step once."""
    if not path.exists():
        return
    lines, notice = metrics_lines(path)
    if notice:
        print(f"train: {notice}", file=sys.stderr)
    kept = [line for line, record in lines if record["step"] <= step]
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(line + "\n" for line in kept))
    os.replace(temporary, path)


def drop_unfinished_attempt(run: RunDir) -> None:
    """A fresh run where an earlier attempt stopped before its first checkpoint (killed, or an
    error): that attempt's metrics.jsonl records and TensorBoard events go, said in one line, so
    that the new run's files hold each step once instead of two runs interleaved."""
    path = run.metrics_file
    records = len(path.read_text().splitlines()) if path.exists() else 0
    events = sorted(run.tensorboard_dir.glob("events.out.tfevents.*"))
    if not records and not events:
        return
    print(f"train: {run.path} holds an earlier attempt without a checkpoint ({records} metrics.jsonl records, "
          f"{len(events)} TensorBoard event files): starting over, they are dropped", file=sys.stderr)
    truncate_metrics(path, -1)
    for event in events:
        event.unlink()


class MetricsLogger:
    """metrics.jsonl, TensorBoard, a progress bar; loss curves and a report at the end."""

    def __init__(self, run: RunDir, config: TrainConfig, manifest: Manifest, *, enabled: bool, start: int,
                 wall_before: float | None = 0.0) -> None:
        """``wall_before``: the run's training wall seconds up to its resume checkpoint (None when that
        checkpoint predates the count), so that a run trained in parts reports its whole time."""
        self.run, self.config, self.enabled = run, config, enabled
        self.wall_before = wall_before
        self.sources = manifest.source_names
        self.writer = self.bar = None
        # [seconds, samples, tokens] of the last 50 steps: every rate shares one window, so
        # tokens_per_s / samples_per_s is the tokens per sample whatever the steps' timing
        self.window: list[list[float]] = []
        self.steps_without_tokens = 0  # steps since the last ``step`` call (whose tokens it brings)
        self.mix = np.zeros(len(self.sources), dtype=np.int64)
        self.began = time.perf_counter()
        self.last_eval: dict = {}
        if not enabled:
            return
        if config.log.tensorboard:
            try:
                if "tensorflow" not in sys.modules:  # tensorboard's own no-TensorFlow switch: training never needs TF
                    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run.tensorboard_dir))
            except ImportError:  # tensorboard is in the 'train' extra
                self.writer = None
        self.wandb = _start_wandb(run, config, manifest) if config.log.wandb else None
        if config.log.progress:
            from kidata.progress import bar

            self.bar = bar(total=config.train.steps, initial=start, desc="train", unit="step")

    def tick(self, *, seconds: float, samples: int) -> None:
        """Every step: the progress bar and the rate window (no device value is read here)."""
        if not self.enabled:
            return
        self.window = (self.window + [[seconds, samples, 0.0]])[-50:]
        self.steps_without_tokens += 1
        if self.bar is not None:
            self.bar.update(1)

    def step(self, step: int, metrics: dict, *, mix: np.ndarray, tokens: int) -> None:
        """At the steps the trainer reads its device metrics (``kidata.training.step_metrics``);
        a record at log steps. ``mix`` (samples per source) and ``tokens`` (the non-padding
        prompt, answer and action tokens over all processes; image patches not counted) count
        the steps since the previous call. Every rate is over the last 50 steps; the tokens a call
        brings are shared evenly among the steps they count."""
        if not self.enabled:
            return
        self.mix += mix
        share = tokens / max(self.steps_without_tokens, 1)
        for entry in self.window[len(self.window) - min(self.steps_without_tokens, len(self.window)):]:
            entry[2] = share
        self.steps_without_tokens = 0
        elapsed = max(sum(entry[0] for entry in self.window), 1e-9)
        rates = {"steps_per_s": len(self.window) / elapsed,
                 "samples_per_s": sum(entry[1] for entry in self.window) / elapsed,
                 "tokens_per_s": sum(entry[2] for entry in self.window) / elapsed}
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{metrics['loss']:.4f}", samples_s=f"{rates['samples_per_s']:.1f}", refresh=False)
        if step % self.config.log.every and step != self.config.train.steps:
            return
        total = float(self.mix.sum()) or 1.0
        record = {"step": step, **{k: round(v, 6) for k, v in metrics.items()}, **{k: round(v, 3) for k, v in rates.items()},
                  "source_mix": {name: round(float(c) / total, 4) for name, c in zip(self.sources, self.mix)}}
        self.mix[:] = 0
        with open(self.run.metrics_file, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, float):
                    self.writer.add_scalar(f"train/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in record.items() if isinstance(v, (int, float))}, step=step)

    def wall_s(self, elapsed: float | None = None) -> float | None:
        """Training wall seconds of the whole run so far, over every process that resumed it
        (``elapsed``: this process's seconds, when the caller has read the clock already)."""
        elapsed = time.perf_counter() - self.began if elapsed is None else elapsed
        return None if self.wall_before is None else round(self.wall_before + elapsed, 1)

    def evaluation(self, step: int, result: dict) -> None:
        self.last_eval = result
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.began  # wall seconds of this process so far
        with open(self.run.metrics_file, "a") as handle:
            handle.write(json.dumps({"step": step, "elapsed_s": round(elapsed, 1), "wall_s": self.wall_s(elapsed),
                                     "eval": result}) + "\n")
        if self.writer is not None:
            for key, value in result.items():
                if isinstance(value, float):
                    self.writer.add_scalar(f"eval/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"eval/{k}": v for k, v in result.items() if isinstance(v, (int, float))}, step=step)

    def finish(self, step: int, result: dict) -> dict:
        if result:
            self.evaluation(step, result)
        if not self.enabled:
            return {}
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        records = self.run.metrics()
        train = [r for r in records if "loss" in r]
        plot_losses(train, self.run.loss_curves_file, evaluations=[r for r in records if "eval" in r])
        if self.wandb is not None:
            import wandb

            self.wandb.log({"loss_curves": wandb.Image(str(self.run.loss_curves_file))}, step=step)
            self.wandb.finish()
        elapsed = time.perf_counter() - self.began
        report = {"steps": step, "final": train[-1] if train else {}, "eval": result,
                  "seconds_this_process": round(elapsed, 1), "wall_s": self.wall_s(elapsed),
                  "checkpoint": str(self.run.latest_checkpoint()), "loss_curves": str(self.run.loss_curves_file)}
        self.run.report_file.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        self.run.eval_file.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        return report


def plot_losses(records: list[dict], path: Path, evaluations: list[dict] = ()) -> None:
    """Training losses (log scale); with closed-loop evaluations, a second panel of success rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    success = sorted({k for r in evaluations for k in r["eval"] if k.startswith("metaworld_success")})
    figure, axes = plt.subplots(2 if success else 1, 1, figsize=(7, 7 if success else 4), squeeze=False)
    axis = axes[0][0]
    for key in ("loss", "flow_loss", "fast_loss"):
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            axis.plot(*zip(*points), label=key)
    axis.set_xlabel("step")
    axis.set_yscale("log")
    axis.legend()
    axis.set_title("training losses")
    if success:
        axis = axes[1][0]
        for key in success:
            points = [(r["step"], r["eval"][key]) for r in evaluations if key in r["eval"]]
            axis.plot(*zip(*points), marker="o", label=key.split("/")[-1] if "/" in key else "mean",
                      linewidth=2.5 if "/" not in key else 1)
        axis.set_xlabel("step")
        axis.set_ylim(-0.05, 1.05)
        axis.legend(fontsize=8)
        axis.set_title("closed-loop success (Meta-World)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _start_wandb(run: RunDir, config: TrainConfig, manifest: Manifest):
    """The run's wandb run: a new one, or the one this directory started (resume keeps its id)."""
    try:
        import wandb
    except ImportError:
        raise ImportError("[log] wandb = true needs Weights & Biases: pip install 'kidata[wandb]'") from None
    id_file = run.wandb_id_file
    run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(6)
    identity = {"recipe_sha256": manifest.recipe_sha256, "fast_sha256": manifest.action_tokenizer.sha256,
                "text_sha256": manifest.text_tokenizer.sha256}
    handle = wandb.init(project=config.log.project, entity=config.log.entity, name=config.log.run_name or run.path.name,
                        id=run_id, resume="allow", dir=str(run.path), config={**config.to_json(), "mixture": identity})
    id_file.write_text(run_id + "\n")
    return handle

