"""``reader = "lerobot"``: LeRobot datasets (v3.0 and v2.1) from a folder or the Hugging Face hub.

The recipe maps LeRobot features onto kidata's standard episode with the part notation of RLDS
mappings (``"action[:6]"``, ``"action[6:7]|pm1_close_to_open"``); fps and instructions (each
frame's ``task_index`` in the task table) come from the dataset. Statistics (pass 1) read parquet
columns only; frames are decoded from the mp4 spans in pass 2 (``kidata.sources.video``) or taken
from the parquet where a camera is stored as images. Defects are counted quarantines, by reason:
``data_missing``, ``length_mismatch``, ``frame_index_gap``, ``timestamps_off_grid``,
``nonfinite_state`` / ``nonfinite_actions``, ``video_missing``, ``video_unreadable`` (a truncated or
corrupt mp4) and ``video_frame_count`` (the video lacks frames the parquet has).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple

import numpy as np

from kidata.config import nearest
from kidata.locate import locate
from kidata.schema import CAMERA_NAMES, Episode, Frames, episode_defect
from kidata.sources.base import ReadReport, WorkUnit, split_range
from kidata.sources.lerobot_meta import INDEX_COLUMNS, EpisodeMeta, LeRobotMeta, read_parquet
from kidata.sources.registry import register_reader
from kidata.sources.spec import STATEFUL_TRANSFORMS, Part
from kidata.sources.video import VideoError, VideoFrames, packet_times

# LeRobot's own default (LeRobotDataset(tolerance_s=1e-4)): how far a timestamp may sit from the
# fps grid, and a video frame from the timestamp it stands for.
DEFAULT_TOLERANCE_S = 1e-4
MAPPING_KEYS = ("cameras", "state", "action")


def resolve_root(path: str | None, repo_id: str | None, revision: str | None) -> Path:
    """The dataset folder: ``path`` (a local folder), or the hub snapshot of dataset repo ``repo_id``."""
    if (path is None) == (repo_id is None):
        raise ValueError("a lerobot source needs exactly one of path = \"folder\" or repo_id = \"org/name\"")
    if path is not None:
        return locate(path, what="LeRobot dataset folder", accept=("path",))
    return locate(repo_id, what="LeRobot dataset repo_id", accept=("hub",), repo_type="dataset", revision=revision,
                  advice="download it where there is network or give path = \"folder\"")


class LeRobotSource:
    """Standard episodes from a LeRobot dataset; work units are ranges of its episodes."""

    kind = "robot"

    def __init__(self, root: str | Path, mapping: Mapping[str, Any], *, name: str = "lerobot",
                 tolerance_s: float = DEFAULT_TOLERANCE_S, min_steps: int = 2) -> None:
        self.meta = LeRobotMeta.load(root)
        self.root = Path(self.meta.root)
        self._root_text = str(self.root)
        self.name = name
        self.tolerance_s = float(tolerance_s)
        self.min_steps = min_steps
        _check_mapping(name, mapping)
        self.state = tuple(Part.parse(p) for p in mapping.get("state", ["observation.state"]))
        self.action = tuple(Part.parse(p) for p in mapping.get("action", ["action"]))
        visual = self.meta.video_keys + self.meta.image_keys
        self._image_keys = frozenset(self.meta.image_keys)
        if "cameras" not in mapping and visual:
            raise ValueError(f"lerobot source {name!r}: mapping.cameras is missing; this dataset's camera features are "
                             f"{list(visual)}; write e.g. cameras = {{ base_0 = \"{visual[0]}\" }}")
        self.cameras = dict(mapping.get("cameras", {}))
        for camera, key in self.cameras.items():
            if camera not in CAMERA_NAMES:
                raise ValueError(f"lerobot source {name!r}: camera {camera!r} is not one of {CAMERA_NAMES}")
            if key not in visual:
                raise KeyError(f"lerobot source {name!r}: {self.root} has no camera feature {key!r}; its camera "
                               f"features: {list(visual)}")
        for part in self.state + self.action:
            if part.key not in self.meta.features:
                raise KeyError(f"lerobot source {name!r}: {self.root} has no feature {part.key!r} (in {part.text!r}); "
                               f"its features: {self.meta.feature_names()}")
        self._task_text = {int(i): text for i, text in self.meta.tasks.items() if text.strip()}
        self._data_keys = frozenset({part.key for part in self.state + self.action} | set(INDEX_COLUMNS))
        self._whole_file_mapping = not any(part.transform in STATEFUL_TRANSFORMS for part in self.state + self.action)
        indices = [e.index for e in self.meta.episodes]
        self.index_gaps = (max(indices) + 1 - len(indices)) if indices else 0

    @property
    def fps(self) -> float:
        return self.meta.fps

    def num_episodes(self) -> int:
        return len(self.meta.episodes)

    def list_units(self, count: int) -> list[WorkUnit]:
        return [WorkUnit(self.name, "episodes", a, b) for a, b in split_range(len(self.meta.episodes), count)]

    def episodes(self, *, images: bool = True, report: ReadReport | None = None) -> Iterator[Episode]:
        for unit in self.list_units(1):
            yield from self.read(unit, images=images, report=report)

    def read(self, unit: WorkUnit, *, images: bool = True, report: ReadReport | None = None) -> Iterator[Episode]:
        report = report if report is not None else ReadReport()
        if unit.start == 0 and self.index_gaps:
            report.notices["episode_index_gaps"] += self.index_gaps
        files: dict[str, Any] = {}  # data file -> its columns, read once per unit
        exists: dict[str, bool] = {}  # video file -> present, checked once per unit
        for meta in self.meta.episodes[unit.start : unit.stop]:
            episode = self._episode(meta, images, report, files, exists)
            if episode is not None:
                yield episode

    # ------------------------------------------------------------------------------------------
    def _file(self, data_path: str, images: bool) -> "_DataFile | None":
        """A data file's columns as numpy arrays (image columns stay arrow), or None if missing."""
        path = self.root / data_path
        if not path.is_file():
            return None
        keys = self._data_keys
        image_keys = {key for key in self.cameras.values() if key in self._image_keys} if images else set()
        # ParquetFile.read, not read_table: the same table without the dataset layer read_table goes
        # through (3.5 -> 2.9 ms for a 40k-row file; docs/results/lerobot.md)
        table = read_parquet(path, columns=sorted(keys | image_keys))
        # timestamps stay float32 as stored: consecutive float32 values subtract exactly, so the grid
        # check loses nothing, and a float64 copy of the column was 0.1 ms of a 40k-row file
        columns = {key: _column(table, key) for key in keys}
        if columns["timestamp"].dtype.kind != "f":
            columns["timestamp"] = columns["timestamp"].astype(np.float64)
        data = _DataFile(columns, {key: table[key] for key in image_keys})
        # Whole-file work, so that a clean episode is slices: the mapping (unless a part's transform
        # runs over time) and the checks (benchmarks/lerobot_bench.py, pass 1, measures the reader).
        breaks = nonfinite = None
        if self._whole_file_mapping:
            data.state, data.actions = (_mapped(parts, columns) for parts in (self.state, self.action))
            # one sum per array settles the common all-finite file (1.2 ms -> 0.03 ms for 40k rows of 6
            # per-row reductions); an inf or NaN anywhere (or an overflowing sum) checks row by row
            if np.isfinite(data.state.sum()) and np.isfinite(data.actions.sum()):
                nonfinite = np.zeros(0, dtype=np.int64)
            else:
                nonfinite = np.flatnonzero(~(np.isfinite(data.state).all(axis=1) & np.isfinite(data.actions).all(axis=1)))
            steps = np.diff(columns["timestamp"])
            steps -= steps.dtype.type(1.0 / self.fps)
            off = np.abs(steps, out=steps) > self.tolerance_s
            frame_index = columns["frame_index"]
            off |= frame_index[1:] != frame_index[:-1] + 1
            breaks = np.flatnonzero(off) + 1
        data.runs = _runs(columns, breaks, nonfinite)
        return data

    def _rows(self, meta: EpisodeMeta, images: bool, files: dict,
              report: ReadReport) -> "tuple[_DataFile, np.ndarray | slice] | None":
        """The episode's data file and its rows there (None when the file is missing). v3.0 files
        hold many episodes in global ``index`` order: the rows are a slice, checked; where the
        metadata's dataset_from_index / dataset_to_index disagree with the file, the rows are found
        by episode_index instead, and counted (notice ``row_range_mismatch``)."""
        if meta.data_path not in files:
            files[meta.data_path] = self._file(meta.data_path, images)
        data = files[meta.data_path]
        if data is None:
            return None
        episode_index = data.columns["episode_index"]
        if meta.rows is None:
            return data, slice(0, len(episode_index))
        run = data.runs.get(meta.index)
        start, stop = meta.rows
        if (run is not None and run.first_index == start and run.last_index == stop - 1
                and run.stop - run.start == stop - start):  # the metadata's rows, none missing
            return data, slice(run.start, run.stop)
        report.notices["row_range_mismatch"] += 1
        return data, np.flatnonzero(episode_index == meta.index)

    def _quarantine(self, report: ReadReport, reason: str, meta: EpisodeMeta) -> None:
        report.quarantined.add(reason)
        report.examples.setdefault(reason, [])
        if len(report.examples[reason]) < 5:
            report.examples[reason].append(f"episode {meta.index}")

    def _episode(self, meta: EpisodeMeta, images: bool, report: ReadReport, files: dict,
                 exists: dict) -> Episode | None:
        located = self._rows(meta, images, files, report)
        if located is None:
            self._quarantine(report, "data_missing", meta)
            return None
        data, rows = located
        run = data.runs.get(meta.index) if isinstance(rows, slice) else None
        if run is not None and (run.start, run.stop) != (rows.start, rows.stop):
            run = None
        if run is not None and run.clean and run.stop - run.start == meta.length >= self.min_steps:
            state, actions, timestamps = data.state[rows], data.actions[rows], data.columns["timestamp"][rows]
        else:
            checked = self._checked(meta, data, rows)
            if isinstance(checked, str):
                self._quarantine(report, checked, meta)
                return None
            state, actions, timestamps = checked
        frames, reason = self._frames(meta, data, rows, timestamps, images, exists)
        if reason is not None:
            self._quarantine(report, reason, meta)
            return None
        if run is not None and run.task >= 0:
            task_indices = [run.task]
        else:
            task_indices = dict.fromkeys(data.columns["task_index"][rows].tolist())  # distinct, in order
        instructions = tuple(self._task_text[i] for i in task_indices if i in self._task_text) or tuple(meta.tasks)
        if not instructions:
            report.notices["no_task_text"] += 1
        return Episode(
            episode_id=f"episode_{meta.index:06d}",
            source=self.name,
            state=state,
            actions=actions,
            instructions=instructions,
            fps=self.fps,
            images=frames,
            metadata={"path": self._root_text, "episode_index": meta.index},
        )

    def _checked(self, meta: EpisodeMeta, data: "_DataFile", rows) -> str | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(state, actions, timestamps) of an episode, or the reason it is quarantined."""
        column = lambda key: data.columns[key][rows]  # noqa: E731
        frame_index = column("frame_index")
        if len(frame_index) != meta.length:
            return "length_mismatch"
        if not np.array_equal(frame_index, np.arange(meta.length)):
            return "frame_index_gap"
        timestamps = column("timestamp")
        if len(timestamps) > 1 and np.abs(np.diff(timestamps) - 1.0 / self.fps).max() > self.tolerance_s:
            return "timestamps_off_grid"
        state = np.concatenate([part.take(column(part.key)) for part in self.state], axis=1)
        actions = np.concatenate([part.take(column(part.key)) for part in self.action], axis=1)
        return episode_defect(state, actions, min_steps=self.min_steps) or (state, actions, timestamps)

    def _frames(self, meta: EpisodeMeta, data: "_DataFile", rows, timestamps: np.ndarray, images: bool,
                exists: dict) -> tuple[dict, str | None]:
        frames: dict[str, Any] = {}
        for camera, key in self.cameras.items():
            if key in self._image_keys:
                if images:
                    picked = np.arange(len(data.columns["index"]))[rows]
                    frames[camera] = Frames([cell["bytes"] for cell in data.images[key].take(picked).to_pylist()])
                continue
            span = meta.videos[key]
            if span.path not in exists:
                exists[span.path] = (self.root / span.path).is_file()
            if not exists[span.path]:
                return {}, "video_missing"
            path = self.root / span.path
            if not images:
                continue
            wanted = span.from_timestamp + timestamps.astype(np.float64)  # float32 + a late file offset loses ms
            try:
                held = packet_times(str(path), span.from_timestamp, span.to_timestamp, self.tolerance_s)
            except VideoError:
                return {}, "video_unreadable"
            if len(held) != len(wanted) or np.abs(held - wanted).max(initial=0.0) > self.tolerance_s:
                return {}, "video_frame_count"
            frames[camera] = VideoFrames(str(path), wanted, tolerance_s=self.tolerance_s)
        return frames, None


def _mapped(parts: tuple[Part, ...], columns: dict[str, np.ndarray]) -> np.ndarray:
    """float32 [N, n]: the parts of a mapping side by side (one part: no copy)."""
    taken = [part.take(columns[part.key]) for part in parts]
    return taken[0] if len(taken) == 1 else np.concatenate(taken, axis=1)


@dataclass
class _DataFile:
    """One data file's columns (numpy arrays [N] or [N, n]; image columns left in arrow) and what
    the reader derives from them for the whole file: mapped state / actions float32 [N, S] / [N, A]
    (None when a part's transform runs over time) and each episode's run of rows (``_runs``)."""

    columns: dict[str, np.ndarray]
    images: dict[str, Any]
    state: np.ndarray | None = None
    actions: np.ndarray | None = None
    runs: "dict[int, _Run]" = field(default_factory=dict)


class _Run(NamedTuple):
    """The rows [start, stop) of one file holding one episode index contiguously; the global
    ``index`` of its first and last row; ``clean``: frame_index starts at 0, every row continues the
    one before on the fps grid, all finite (the common case, so that a clean episode is slices);
    ``task``: its one task_index, -1 when it changes within the run. A named tuple, built by
    ``map`` over the file's columns: a frozen dataclass's ``__init__`` cost 1 us a run."""

    start: int
    stop: int
    first_index: int
    last_index: int
    clean: bool
    task: int


def _runs(columns: Mapping[str, np.ndarray], breaks: np.ndarray | None,
          nonfinite: np.ndarray | None) -> dict[int, _Run]:
    """Every episode's run in a data file, derived for the whole file at once (vectorized): the
    reader then settles a clean episode with a dictionary lookup (benchmarks/lerobot_bench.py,
    pass 1). ``breaks``: sorted rows that do not continue the row before (frame_index + 1, one
    frame later on the grid); ``nonfinite``: sorted rows with a non-finite state or action (both
    None when a transform runs over time: every episode takes the detailed checks). Counting
    those inside a run is two binary searches. An episode index met in two separate runs keeps
    its first; the reader's row check then finds the mismatch."""
    episode_index, task_index = columns["episode_index"], columns["task_index"]
    rows = len(episode_index)
    if rows == 0:
        return {}
    cuts = np.flatnonzero(episode_index[1:] != episode_index[:-1]) + 1
    starts, stops = np.concatenate([[0], cuts]), np.concatenate([cuts, [rows]])

    def inside(positions: np.ndarray, first: np.ndarray) -> np.ndarray:
        """How many of ``positions`` lie in [first, stops) of each run."""
        return np.searchsorted(positions, stops) - np.searchsorted(positions, first)

    task_starts = np.flatnonzero(task_index[1:] != task_index[:-1]) + 1  # rows where the task changes
    one_task = inside(task_starts, starts + 1) == 0
    if breaks is None:
        clean = np.zeros(len(starts), dtype=bool)
    else:
        clean = ((columns["frame_index"][starts] == 0) & (inside(breaks, starts + 1) == 0)
                 & (inside(nonfinite, starts) == 0))
    tasks = np.where(one_task, task_index[starts], -1).tolist()
    runs = list(map(_Run, starts.tolist(), stops.tolist(), columns["index"][starts].tolist(),
                    columns["index"][stops - 1].tolist(), clean.tolist(), tasks))
    # reversed, so that an episode index met twice keeps its first run
    return dict(zip(reversed(episode_index[starts].tolist()), reversed(runs)))


def _column(table, key: str) -> np.ndarray:
    """A feature column as [N, n] (vector features) or [N] (scalars)."""
    import pyarrow as pa

    column = table[key].combine_chunks()
    kind = column.type
    if pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)
    return column.to_numpy(zero_copy_only=False)


def _check_mapping(name: str, mapping: Any) -> None:
    """``mapping = { cameras = { base_0 = "feature" }, state = ["feature", ...], action = [...] }``: its keys
    and the type of each, refused in one sentence naming the key (a string where a list goes would be read
    letter by letter)."""
    if not isinstance(mapping, Mapping):
        raise ValueError(f"lerobot source {name!r}: mapping = {mapping!r}: expected a table such as "
                         "{ cameras = { base_0 = \"observation.images.top\" }, state = [...], action = [...] }")
    unknown = set(mapping) - set(MAPPING_KEYS)
    if unknown:
        key = sorted(unknown)[0]
        raise ValueError(f"lerobot source {name!r}: unknown mapping key {key!r}{nearest(key, MAPPING_KEYS)}")
    cameras = mapping.get("cameras", {})
    if not isinstance(cameras, Mapping) or not all(isinstance(v, str) for v in cameras.values()):
        raise ValueError(f"lerobot source {name!r}: mapping.cameras = {cameras!r}: expected a table of camera name = "
                         "feature, e.g. { base_0 = \"observation.images.top\" }")
    for key in ("state", "action"):
        parts = mapping.get(key, [])
        if not isinstance(parts, (list, tuple)) or not all(isinstance(p, str) for p in parts):
            raise ValueError(f"lerobot source {name!r}: mapping.{key} = {parts!r}: expected a list of features, "
                             f"e.g. [\"observation.state\"]")


@register_reader("lerobot", kind="robot", options=("path", "repo_id", "revision", "mapping", "tolerance_s"),
                 paths=("path",))
def open_lerobot(options, *, name: str | None, image_size: int, seed: int = 0) -> LeRobotSource:
    """A LeRobot dataset folder (``path``) or hub dataset (``repo_id``, optional ``revision``)."""
    root = resolve_root(options.get("path"), options.get("repo_id"), options.get("revision"))
    return LeRobotSource(root, options.get("mapping") or {}, name=name or "lerobot",
                         tolerance_s=float(options.get("tolerance_s", DEFAULT_TOLERANCE_S)))
