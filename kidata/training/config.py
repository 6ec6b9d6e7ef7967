"""Trainer configuration: frozen dataclasses filled from a TOML preset (``model/*.toml``: tables
``[model]``, ``[train]``, ``[optim]``, ``[schedule]``, ``[data]``, ``[eval]``, ``[log]``,
``[checkpoint]``, ``[policy]``) and then from command-line overrides (``--optim.lr 5e-5``)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from kidata.choices import ActionHead, CameraName, FastFallback, FrozenWeights, InitFormat, TrainPrecision
from kidata.config import (
    ConfigError,
    Overrides,
    apply_overrides,
    check_keys,
    choices,
    from_table,
    nested_overrides,
    option_table,
    read_toml,
    table_json,
)
from kidata.model.config import ModelConfig

INIT_FORMATS = choices(InitFormat)
TRAIN_PRECISIONS = choices(TrainPrecision)
ACTION_HEADS = choices(ActionHead)
FAST_FALLBACKS = choices(FastFallback)
CAMERA_NAMES = choices(CameraName)


@dataclass(frozen=True)
class AugmentStrengths:
    """``[data] augment = { ... }``: the strengths of ``kidata.loader.Augment`` (its arguments) that
    change, each unset one at Augment's openpi-style default (``{ crop = 1.0, degrees = 0.0 }``:
    colour jitter only)."""

    crop: float | None = None
    degrees: float | None = None
    brightness: float | None = None
    contrast: float | None = None
    saturation: float | None = None


AUGMENT_STRENGTHS = tuple(f.name for f in dataclasses.fields(AugmentStrengths))


@dataclass(frozen=True)
class LoopConfig:
    """steps: optimizer steps. precision: ``auto`` = bf16 autocast on CUDA, fp32 on CPU (master
    weights stay fp32 either way). init_from: a PaliGemma checkpoint (directory, URL or hub id)
    for the backbone, an openpi pi0/pi0.5 ``model.safetensors`` when ``init_format='openpi'``, or
    a kidata run's backbone when ``init_format='kidata'`` (e.g. a ``vlm`` run: the expert stays
    fresh). frozen_weights: ``bf16`` stores the frozen weights of linear and convolution layers in
    bf16 (openpi keeps frozen weights in bf16; LoRA, ``frozen``), for bf16 runs only: the same
    training bit for bit, 2 bytes per such weight instead of 4 (``initialize.store_frozen_in_bf16``)."""

    steps: int = 1000
    seed: int = 0
    precision: TrainPrecision = "auto"
    compile: bool = False
    activation_checkpointing: bool = False
    fsdp: bool = False
    init_from: str = ""
    init_format: InitFormat = "paligemma"
    deterministic: bool = False  # deterministic kernels only (kidata/training/determinism.py): reproducible, slower
    frozen_weights: FrozenWeights = "fp32"


@dataclass(frozen=True)
class OptimConfig:
    """AdamW; ``ema_decay`` 0 turns the weight EMA off; gradients are clipped to ``clip_norm``."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    grad_accum: int = 1
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        betas = self.betas
        if not (isinstance(betas, (list, tuple)) and len(betas) == 2
                and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
            raise ValueError(f"optim.betas must be two numbers in [0, 1) (AdamW's, e.g. [0.9, 0.95]), got {betas!r}")


@dataclass(frozen=True)
class ScheduleConfig:
    """Linear warm-up from 0, then cosine decay to ``final_lr_fraction`` x lr at ``decay_steps``
    (0 = the run's steps)."""

    warmup_steps: int = 100
    decay_steps: int = 0
    final_lr_fraction: float = 0.1

    def __post_init__(self) -> None:
        for name, value in (("warmup_steps", self.warmup_steps), ("decay_steps", self.decay_steps)):
            if isinstance(value, int) and value < 0:
                raise ValueError(f"schedule.{name} must be >= 0, got {value}")


@dataclass(frozen=True)
class DataConfig:
    """The mixture: ``manifest`` path or URL; ``weights`` overrides the manifest's source weights;
    ``verify_shards`` checks each shard's sha256 against the manifest when it is first opened
    (the loader always checks token ids, lengths and sample counts). ``streams`` fixes the data
    order to that many streams whatever the number of processes (0: one per process): each step
    takes ``batch_size x grad_accum`` samples from every stream, so a run saved on N processes
    resumes on any M dividing it with the same batches, noise and losses (``training.streams``).
    ``augment``: true (``kidata.loader.Augment``'s openpi-style strengths), false, or a table
    overriding some strengths (``{ crop = 1.0, degrees = 0.0 }``: colour jitter only)."""

    manifest: str = ""
    batch_size: int = 32
    num_workers: int = 2
    weights: Mapping[str, float] = field(default_factory=dict)
    balance: bool = False
    shuffle_buffer: int = 256
    augment: bool | AugmentStrengths = True
    cameras: tuple[str, ...] = ("base_0", "base_1", "left_wrist_0", "right_wrist_0")
    verify_shards: bool = False
    streams: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.augment, Mapping):  # a TOML table, an override or config.json
            object.__setattr__(self, "augment", option_table(AugmentStrengths, self.augment, "data.augment", ValueError))
        elif not isinstance(self.augment, (bool, AugmentStrengths)):
            raise ValueError(f"data.augment must be true, false or a table of strengths {list(AUGMENT_STRENGTHS)}, "
                             f"got {self.augment!r}")
        if self.streams < 0:
            raise ValueError(f"data.streams must be >= 0 (0: one per process), got {self.streams}")
        unknown = [camera for camera in self.cameras if camera not in CAMERA_NAMES]
        if unknown or len(set(self.cameras)) != len(self.cameras):  # else that slot trains on no image at all
            raise ValueError(f"data.cameras must be distinct standard camera names {list(CAMERA_NAMES)}, got "
                             f"{list(self.cameras)}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0 (0: loading in the training process), got {self.num_workers}")
        if self.shuffle_buffer < 1:
            raise ValueError(f"data.shuffle_buffer must be >= 1 (samples shuffled together), got {self.shuffle_buffer}")
        wrong = {name: weight for name, weight in self.weights.items()
                 if isinstance(weight, bool) or not isinstance(weight, (int, float))}
        if wrong:
            raise ValueError(f"data.weights must map source names to numbers, got {wrong}")

    @property
    def augment_setting(self) -> bool | dict[str, float]:
        """``augment`` as written: true, false or the table of strengths set (``Augment.from_setting``)."""
        return table_json(self.augment) if isinstance(self.augment, AugmentStrengths) else self.augment


@dataclass(frozen=True)
class MetaworldEval:
    """``[eval] metaworld = { tasks = [...], ... }``: closed-loop evaluation during training. Unset
    fields: ``episodes`` 5 per task, ``max_steps`` the evaluator's episode budget, ``replan``
    ``[policy]``'s, ``every`` each evaluation."""

    tasks: tuple[str, ...] | str | None = None  # names, or MT10 / MT50
    episodes: int | None = None
    max_steps: int | None = None
    replan: int | None = None
    every: int | None = None

    def __post_init__(self) -> None:
        # refused here, not at the first closed-loop evaluation after hours of training (the task
        # names themselves are the evaluator's: ``kidata.eval.during_training`` checks them before
        # the first step)
        if self.tasks is None:
            raise ValueError("eval.metaworld needs tasks (names or MT10 / MT50)")
        names = self.tasks if isinstance(self.tasks, (list, tuple)) else None
        if not isinstance(self.tasks, str) and (not names or not all(isinstance(task, str) for task in names)):
            raise ValueError(f"eval.metaworld.tasks must be task names such as [\"reach\"], or MT10 / MT50, "
                             f"got {self.tasks!r}")
        for name, value, what in (("episodes", self.episodes, "episodes per task"),
                                  ("max_steps", self.max_steps, "the step budget of an episode"),
                                  ("replan", self.replan, "actions executed per predicted chunk"),
                                  ("every", self.every, "steps between closed-loop evaluations")):
            if value is not None and value < 1:
                raise ValueError(f"eval.metaworld.{name} must be >= 1 ({what}), got {value}")




@dataclass(frozen=True)
class EvalConfig:
    """Every ``every`` steps (0 = only at the end) on ``batches`` batches of the held-out split.
    ``metaworld = { tasks = [...], episodes = N, max_steps = 300, replan = R, every = S }`` also runs
    the policy closed-loop in Meta-World (rank 0; the run's scene settings, ``[policy]``'s action
    head, and its ``replan`` unless given here) at the evaluations whose
    step is a multiple of ``every`` (default: each one) and at the last, so success rates land in
    metrics.jsonl, TensorBoard and the loss-curve plot: a closed-loop episode costs ~2-3 s of this
    CPU where a held-out batch costs ~0.3 s (tiny preset), so a run can plot its action error
    finely and its success coarsely. ``at_start`` also evaluates the held-out split before the
    first step (logged at step 0): what an initialization (``init_from``) knew before training,
    the "before" of a retention comparison; closed-loop is not run there (a fresh expert's
    success is 0, and its failures run the longest episodes: ``kidata eval metaworld`` measures
    an initialization)."""

    every: int = 500
    at_start: bool = False
    batches: int = 2
    batch_size: int = 8
    num_steps: int = 10
    max_new_tokens: int = 64
    metaworld: MetaworldEval | None = None  # unset (an empty table): no closed-loop evaluation

    def __post_init__(self) -> None:
        # what the first evaluation would trip over, refused before the first training step
        for name, value, what in (("batches", self.batches, "held-out batches per evaluation"),
                                  ("batch_size", self.batch_size, "held-out samples per batch"),
                                  ("num_steps", self.num_steps, "flow integration steps"),
                                  ("max_new_tokens", self.max_new_tokens, "FAST and answer tokens generated")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"eval.{name} must be a whole number >= 1 ({what}), got {value!r}")
        if isinstance(self.metaworld, Mapping):  # a TOML table, an override or config.json
            table = option_table(MetaworldEval, self.metaworld, "eval.metaworld", ValueError) if self.metaworld else None
            object.__setattr__(self, "metaworld", table)
        elif self.metaworld is not None and not isinstance(self.metaworld, MetaworldEval):
            raise ValueError(f"eval.metaworld must be a table such as {{ tasks = [\"reach\"], episodes = 5 }}, "
                             f"got {self.metaworld!r}")

    def closed_loop_at(self, step: int, last_step: int) -> bool:
        """Whether the evaluation at ``step`` runs the Meta-World evaluator too."""
        if not self.metaworld or step == 0:
            return False
        return step == last_step or step % (self.metaworld.every or self.every or last_step) == 0


@dataclass(frozen=True)
class LogConfig:
    """``wandb = true`` also logs to Weights & Biases (extra ``kidata[wandb]``; ``WANDB_MODE=offline``
    works): metrics, evaluations, the loss curves and the config with the mixture's identity; a
    resumed run continues the same wandb run (its id is kept in RUN/wandb_run_id)."""

    every: int = 10
    tensorboard: bool = True
    progress: bool = True
    wandb: bool = False
    project: str = "kidata"
    entity: str | None = None
    run_name: str | None = None


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 1000
    keep: int = 3


@dataclass(frozen=True)
class PolicyConfig:
    """How the trained run acts unless a caller says otherwise (``kidata.policy.load``, ``kidata
    serve``, ``kidata eval metaworld``, ``[eval] metaworld``, ``kidata demo``). ``action_head``:
    ``flow`` (the expert), ``fast`` (greedy FAST tokens from the backbone, decoded; a ``ki`` model
    trains both, and on Meta-World its backbone acts better than its small expert: docs/results/metaworld.md) or
    ``auto`` (the expert when there is one). ``replan``: actions executed from each predicted chunk
    before the next observation, in the evaluators (the whole chunk when it is shorter; a robot's
    own client loop decides when serving). ``fast_fallback``: what acts when the FAST tokens do
    not decode to exactly horizon x dim coefficients: ``relaxed`` (invalid coefficients zeroed and
    the row padded or cut, as openpi's FAST decode does) or ``flow`` (the expert's chunk for that
    observation; a ``ki`` model has one). Either way the policy counts them (``Policy.counters``).
    ``temporal_ensemble``: ACT's decay m; when set, the evaluators execute the weighted mean of every
    chunk covering a step (weights exp(-m i), oldest first: ``kidata.eval.chunking``) instead of
    the newest chunk's actions."""

    action_head: ActionHead = "auto"
    replan: int = 5
    fast_fallback: FastFallback = "relaxed"
    temporal_ensemble: float | None = None

    def __post_init__(self) -> None:
        if self.action_head not in ACTION_HEADS:
            raise ValueError(f"policy.action_head {self.action_head!r}: choose one of {ACTION_HEADS}")
        if self.fast_fallback not in FAST_FALLBACKS:
            raise ValueError(f"policy.fast_fallback {self.fast_fallback!r}: choose one of {FAST_FALLBACKS}")
        if self.replan < 1:
            raise ValueError(f"policy.replan must be >= 1 (actions executed per predicted chunk), got {self.replan}")
        decay = self.temporal_ensemble
        if decay is not None:
            if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not math.isfinite(decay):
                raise ValueError(f"policy.temporal_ensemble must be a finite number (ACT's decay, e.g. 0.01), "
                                 f"got {decay!r}")
            object.__setattr__(self, "temporal_ensemble", float(decay))


SECTIONS = {"train": LoopConfig, "optim": OptimConfig, "schedule": ScheduleConfig, "data": DataConfig,
            "eval": EvalConfig, "log": LogConfig, "checkpoint": CheckpointConfig,
            "policy": PolicyConfig}


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig
    train: LoopConfig = LoopConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()
    log: LogConfig = LogConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    policy: PolicyConfig = PolicyConfig()

    def __post_init__(self) -> None:
        if self.train.precision not in TRAIN_PRECISIONS:
            raise ValueError(f"train.precision must be auto, fp32 or bf16, got {self.train.precision!r}")
        if self.train.frozen_weights not in choices(FrozenWeights):
            raise ValueError(f"train.frozen_weights must be fp32 or bf16, got {self.train.frozen_weights!r}")
        if self.train.init_format not in INIT_FORMATS:
            raise ValueError(f"train.init_format must be one of {INIT_FORMATS}, got {self.train.init_format!r}")
        for name, value in (("train.steps", self.train.steps), ("data.batch_size", self.data.batch_size),
                            ("optim.grad_accum", self.optim.grad_accum), ("checkpoint.keep", self.checkpoint.keep),
                            ("checkpoint.every", self.checkpoint.every), ("log.every", self.log.every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if isinstance(self.eval.every, bool) or not isinstance(self.eval.every, int) or self.eval.every < 0:
            raise ValueError(f"eval.every must be a whole number >= 0 (0: only at the end), got {self.eval.every!r}")
        if self.model.lora is not None and not self.train.init_from:
            raise ValueError("model.lora adapts pretrained weights, and train.init_from is empty: name a PaliGemma, "
                             "openpi or kidata checkpoint, or drop model.lora to train every weight")
        if self.policy.action_head == "flow" and not self.model.has_expert:
            raise ValueError(f"policy.action_head 'flow': the {self.model.variant} model has no action expert "
                             "(use fast or auto)")
        if self.policy.fast_fallback == "flow" and not self.model.has_expert:
            raise ValueError(f"policy.fast_fallback 'flow': the {self.model.variant} model has no action expert "
                             "(use relaxed)")
        if self.policy.action_head == "fast" and not self.model.fast_loss:
            raise ValueError(f"policy.action_head 'fast': the {self.model.variant} model trains no action tokens "
                             "(use flow or auto)")

    def to_json(self) -> dict:
        """The config as the sectioned tables it reads back from (``from_mapping``); an option
        table holds only the keys set (``data.augment``, ``eval.metaworld``: ``{}`` when unset)."""
        data = dataclasses.asdict(self)
        data["data"]["augment"] = self.data.augment_setting
        data["eval"]["metaworld"] = table_json(self.eval.metaworld) if self.eval.metaworld else {}
        return data

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, origin: str = "config") -> "TrainConfig":
        sections = {"model": ModelConfig, **SECTIONS}
        check_keys(data, list(sections), f"{origin}: ", noun="table")
        for name, table in data.items():
            if not isinstance(table, Mapping):
                raise ConfigError(f"{origin}: {name} = {table!r}: expected a table of {name}'s keys")
        return cls(**{name: from_table(kind, dict(data.get(name, {})), f"{origin}: ", section=f"{name}.")
                      for name, kind in sections.items()})

    @classmethod
    def load(cls, path: str | Path, overrides: Overrides | Sequence[str] = ()) -> "TrainConfig":
        """A preset plus overrides: ``{"train": {"steps": 3}}`` (Python callers), or the command line's
        ``--section.key value`` strings (values read as TOML literals, bare words as strings). A
        relative path that does not exist names a shipped preset (``model/ki_tiny.toml``)."""
        data, found = read_toml(path, kind="model")
        table = check_overrides(overrides)
        return cls.from_mapping(apply_overrides(data, table), origin=str(found))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")


def check_overrides(overrides: Overrides | Sequence[str]) -> Overrides:
    """The overrides as a nested table, each key and value checked against the config's fields: a
    mistake is named as the overrides' (``overrides: unknown key 'train.stepz'``, or ``command line:
    unknown key '--train.stepz'`` for the command line's strings), not as the preset file's."""
    if isinstance(overrides, (str, bytes)):  # else read character by character: "expected --section.key, got '-'"
        raise ConfigError(f"overrides {overrides!r}: a string; pass a table such as {{'train': {{'steps': 3}}}}, or the "
                          "command line's arguments as a list ['--train.steps', '3']")
    command_line = not isinstance(overrides, Mapping)
    table = nested_overrides(overrides) if command_line else overrides
    where, flag = ("command line: ", "--") if command_line else ("overrides: ", "")
    sections = {"model": ModelConfig, **SECTIONS}
    for section, values in table.items():
        check_keys({section: None}, list(sections), where, noun="table")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}{section} = {values!r}: expected a table such as {{'{section}': {{key: value}}}}")
        from_table(sections[section], values, where, section=f"{flag}{section}.", fields_only=True)
    return table


def load(preset: str | Path, overrides: Overrides | None = None) -> TrainConfig:
    """The training config of a preset (a shipped name such as ``ki_tiny``, or a TOML file) with
    ``overrides`` on top, ``{"train": {"steps": 3}, "data": {"manifest": path}}``: the Python
    caller's ``kidata train --model PRESET --train.steps 3 --data.manifest PATH``."""
    return TrainConfig.load(preset, overrides or {})
