"""A training run's folder (``RUN``, the ``--out`` of ``kidata train``): the one place its layout is
spelled and its files are read and written.

Layout::

    config.json        the resolved TrainConfig
    manifest.json      a copy of the build's manifest        } what the policy needs to encode
    fast_tokenizer/    a copy of the build's action tokenizer } inputs exactly as the build did
    checkpoints/       step_NNNNNNN/ folders and ``latest`` (``kidata.training.checkpoint``)
    metrics.jsonl      one JSON record per logged step and evaluation; tensorboard/ its events
    report.json        the final report; eval.json, loss_curves.png beside it

Training writes it (``create``, then ``MetricsLogger`` and the checkpoints); the policy,
``kidata export``, resuming, ``init_from`` another run and ``kidata compare`` read it through
``RunDir`` alone, so a file that moves or changes form changes here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kidata.manifest import ACTION_TOKENIZER_DIR, MANIFEST_FILE, BuildDir, Manifest
from kidata.training import checkpoint
from kidata.training.config import TrainConfig

if TYPE_CHECKING:
    import torch

    from kidata.tokenizers.prompt import SampleEncoder

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
REPORT_FILE = "report.json"
EVAL_FILE = "eval.json"
LOSS_CURVES_FILE = "loss_curves.png"
TENSORBOARD_DIR = "tensorboard"
WANDB_ID_FILE = "wandb_run_id"  # a resumed run continues the wandb run this folder started
RUN_FOLDERS = (checkpoint.CHECKPOINTS_DIR, ACTION_TOKENIZER_DIR)
RUN_FILES = (CONFIG_FILE, MANIFEST_FILE, METRICS_FILE, REPORT_FILE, EVAL_FILE, LOSS_CURVES_FILE)


@dataclass(frozen=True)
class RunDir:
    """The run at ``path`` (a local folder; it need not exist yet)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of_checkpoint(cls, path: str | Path) -> "RunDir":
        """The run a checkpoint folder (``RUN/checkpoints/step_NNNNNNN``) belongs to."""
        return cls(Path(path).parent.parent)

    # ------------------------------------------------------------------ where things are
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def manifest_file(self) -> Path:
        return self.path / MANIFEST_FILE

    @property
    def action_tokenizer_dir(self) -> Path:
        return self.path / ACTION_TOKENIZER_DIR

    @property
    def checkpoints_dir(self) -> Path:
        return checkpoint.checkpoints_folder(self.path)

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD_DIR

    @property
    def wandb_id_file(self) -> Path:
        return self.path / WANDB_ID_FILE

    @property
    def report_file(self) -> Path:
        return self.path / REPORT_FILE

    @property
    def eval_file(self) -> Path:
        return self.path / EVAL_FILE

    @property
    def loss_curves_file(self) -> Path:
        return self.path / LOSS_CURVES_FILE

    # ------------------------------------------------------------------ reading
    def is_run(self) -> bool:
        """Whether training has written here (its ``config.json``)."""
        return self.config_file.is_file()

    def require_run(self) -> "RunDir":
        """This run, or FileNotFoundError naming the folder when it is not one."""
        if not self.is_run():
            raise FileNotFoundError(f"{self.path}: not a kidata run (no {CONFIG_FILE}); pass the --out folder of "
                                    "`kidata train`")
        return self

    def config_mapping(self) -> dict[str, Any]:
        """``config.json`` as written (what ``--resume`` overrides apply to); ConfigError naming the
        file when it is not the JSON object of tables training wrote."""
        from kidata.config import ConfigError

        try:
            data = json.loads(self.config_file.read_text())
        except (UnicodeDecodeError, ValueError) as error:
            raise ConfigError(f"{self.config_file}: not the JSON training wrote ({error}); restore it from a copy, or "
                              "print a config with kidata train --model PRESET --print-config and start a new run") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{self.config_file}: expected a JSON object of tables ({{\"model\": {{...}}, ...}}), got "
                              f"{type(data).__name__}; restore the file training wrote")
        for name, table in data.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{self.config_file}: {name} = {table!r}: expected a table of {name}'s keys; restore "
                                  "the file training wrote")
        return data

    def config(self) -> TrainConfig:
        """The run's resolved config; a file written before a field existed holds its default."""
        return TrainConfig.from_mapping(self.config_mapping(), origin=str(self.config_file))

    def manifest(self) -> Manifest:
        """The run's copy of the build's manifest (FileNotFoundError naming it, and what to put back,
        when it is gone)."""
        if not self.manifest_file.is_file():
            raise FileNotFoundError(f"{self.manifest_file} is missing: the run's copy of the manifest of the build it "
                                    f"trained on ({self.config_file}'s data.manifest); copy that build's manifest.json "
                                    "there")
        return BuildDir(str(self.manifest_file)).read_manifest()

    def encoder(self, manifest: Manifest | None = None) -> "SampleEncoder":
        """The sample encoder the build used, from the run's copies of its manifest (or ``manifest``)
        and action tokenizer; both tokenizers are checked against the manifest's sha256."""
        from kidata.tokenizers.prompt import SampleEncoder

        manifest = manifest if manifest is not None else self.manifest()
        if not self.action_tokenizer_dir.is_dir():
            raise FileNotFoundError(f"{self.action_tokenizer_dir} is missing: the run's copy of the action tokenizer of "
                                    f"the build it trained on; copy that build's {ACTION_TOKENIZER_DIR}/ folder there")
        return SampleEncoder.from_manifest(manifest, self.action_tokenizer_dir)

    def metrics(self) -> list[dict[str, Any]]:
        """Every ``metrics.jsonl`` record, in the order written (a torn last line left out: ``read_metrics``)."""
        return read_metrics(self.metrics_file)[0]

    def has_metrics(self) -> bool:
        return self.metrics_file.is_file()

    def is_finished(self) -> bool:
        """Whether training ran to its end (the final report is written last)."""
        return self.report_file.is_file()

    def report(self) -> dict[str, Any]:
        """The final report ({} while the run has none)."""
        return json.loads(self.report_file.read_text()) if self.is_finished() else {}

    # ------------------------------------------------------------------ checkpoints
    def checkpoints(self) -> list[Path]:
        """Every finished checkpoint folder, newest (highest step) first."""
        return checkpoint.step_dirs(self.path)

    def holds_checkpoints(self) -> bool:
        """Any trace of a checkpoint, damaged or not."""
        return checkpoint.holds_checkpoints(self.path)

    def newest_complete(self) -> tuple[Path | None, list[str]]:
        """The newest checkpoint that verifies, and a notice for each newer one passed over."""
        return checkpoint.newest_complete(self.path)

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint (None before the first); CheckpointError when checkpoints
        exist but none verifies."""
        return checkpoint.latest_checkpoint(self.path)

    def checkpoint_named(self, named: str | Path) -> Path:
        """A checkpoint argument as a folder: a path as given, or a bare name that is no path here
        (``step_0000002``) as one of this run's checkpoints (a wrong one then names those it holds)."""
        path = Path(named)
        return self.checkpoints_dir / path if not path.exists() and len(path.parts) == 1 else path

    def weights(self, named: Path | None = None, *, use_ema: bool = True
                ) -> tuple[Path, dict[str, "torch.Tensor"], bool]:
        """(checkpoint, whole weights, whether the EMA's) of the checkpoint ``named`` (``checkpoint_named``)
        or else the newest complete one, verified against its checksums first."""
        return checkpoint.read_run_weights(self.path, self.checkpoint_named(named) if named else None, use_ema=use_ema)

    # ------------------------------------------------------------------ writing
    def create(self, config: TrainConfig, manifest: Manifest, build: BuildDir) -> None:
        """Creates the folder (proved writable), writes the config, and copies the build's manifest
        and action tokenizer: what the policy needs, whatever becomes of the build."""
        import fsspec

        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OSError(error.errno, f"{self.path}: cannot create the run directory there ({error.strerror or error}); "
                                       "choose a writable --out") from None
        self.check_writable()
        config.save(self.config_file)
        self.manifest_file.write_text(manifest.dumps())
        fs, base = fsspec.core.url_to_fs(build.action_tokenizer_path)
        target = self.action_tokenizer_dir
        target.mkdir(exist_ok=True)
        for path in fs.ls(base, detail=False):
            if fs.isfile(path):
                (target / Path(path).name).write_bytes(fs.cat_file(path))

    def check_writable(self) -> None:
        """Creates the run's folders and proves each writable (a probe file written and removed):
        a file where a folder belongs (``RUN/checkpoints`` as a file) or a folder where a file
        belongs would otherwise fail at the first checkpoint or report and lose the steps trained
        until then. Raises OSError naming the path and what to do."""
        for name in RUN_FOLDERS:
            folder = self.path / name
            if folder.exists() and not folder.is_dir():
                raise OSError(f"{folder} is a file where the run keeps its {name} folder: move it away or choose "
                              "another --out")
            probe = folder / f".kidata-write-test-{os.getpid()}"
            try:
                folder.mkdir(exist_ok=True)
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as error:
                raise OSError(f"{folder}: the run cannot write there ({error.strerror or error}); choose a writable "
                              "--out") from None
        for name in RUN_FILES:
            if (self.path / name).is_dir():
                raise OSError(f"{self.path / name} is a folder where the run writes its {name}: move it away or "
                              "choose another --out")


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The records of a ``metrics.jsonl``, and a notice when its last line was torn (``metrics_lines``)."""
    lines, notice = metrics_lines(path)
    return [record for _, record in lines], notice


def metrics_lines(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
    """Each line of a ``metrics.jsonl`` with its record, and a notice when the last line was torn (a
    process killed while appending it: that line is left out, the records before it stand). A line
    that does not parse anywhere else is damage no kill leaves: ValueError naming file and line."""
    lines = [(number, line) for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
             if line.strip()]
    out, notice = [], None
    for index, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("not a record with a step")
        except ValueError as error:
            if index < len(lines) - 1:
                raise ValueError(f"{path}, line {number}: not a metrics record ({error}); delete that line (or the file: "
                                 "it is the run's log, not its state) and run again") from None
            notice = f"{path}, line {number}: a torn last record (its process was stopped while writing it) is left out"
            continue
        out.append((line, record))
    return out, notice
