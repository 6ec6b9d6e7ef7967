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

from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from kidata.config import nearest
from kidata.schema import CAMERA_NAMES, Episode, Frames, episode_defect
from kidata.sources.base import ReadReport, WorkUnit, split_range
from kidata.sources.lerobot_meta import INDEX_COLUMNS, EpisodeMeta, LeRobotMeta
from kidata.sources.registry import register_reader
from kidata.sources.spec import Part
from kidata.sources.video import VideoError, VideoFrames, packet_times

# LeRobot's own default (LeRobotDataset(tolerance_s=1e-4)): how far a timestamp may sit from the
# fps grid, and a video frame from the timestamp it stands for.
DEFAULT_TOLERANCE_S = 1e-4
MAPPING_KEYS = ("cameras", "state", "action")


def resolve_root(path: str | None, repo_id: str | None, revision: str | None) -> Path:
    """The dataset folder: ``path``, or the hub snapshot of dataset repo ``repo_id``."""
    if (path is None) == (repo_id is None):
        raise ValueError("a lerobot source needs exactly one of path = \"folder\" or repo_id = \"org/name\"")
    if path is not None:
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"LeRobot dataset folder {root} does not exist")
        return root
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError:
        raise ImportError(f"repo_id {repo_id!r} needs huggingface_hub (pip install 'kidata[model]')") from None
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", revision=revision))
    except Exception as error:  # noqa: BLE001 - offline, unknown repo, no access: one sentence
        raise FileNotFoundError(
            f"LeRobot dataset repo_id {repo_id!r} (revision {revision or 'main'}) is not in the hub cache and could "
            f"not be fetched ({type(error).__name__}: {' '.join(str(error).split())[:160]}); the cache looked in: "
            f"{constants.HF_HUB_CACHE}; download it where there is network or give path = \"folder\"") from None


class LeRobotSource:
    """Standard episodes from a LeRobot dataset; work units are ranges of its episodes."""

    kind = "robot"

    def __init__(self, root: str | Path, mapping: Mapping[str, Any], *, name: str = "lerobot",
                 tolerance_s: float = DEFAULT_TOLERANCE_S, min_steps: int = 2) -> None:
        self.meta = LeRobotMeta.load(root)
        self.root = Path(self.meta.root)
        self.name = name
        self.tolerance_s = float(tolerance_s)
        self.min_steps = min_steps
        unknown = set(mapping) - set(MAPPING_KEYS)
        if unknown:
            key = sorted(unknown)[0]
            raise ValueError(f"lerobot source {name!r}: unknown mapping key {key!r}{nearest(key, MAPPING_KEYS)}")
        self.state = tuple(Part.parse(p) for p in mapping.get("state", ["observation.state"]))
        self.action = tuple(Part.parse(p) for p in mapping.get("action", ["action"]))
        visual = self.meta.video_keys + self.meta.image_keys
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
        tables: dict[str, Any] = {}  # data file -> its table, read once per unit
        for meta in self.meta.episodes[unit.start : unit.stop]:
            episode = self._episode(meta, images, report, tables)
            if episode is not None:
                yield episode

    # ------------------------------------------------------------------------------------------
    def _columns(self, images: bool) -> list[str]:
        keys = {part.key for part in self.state + self.action} | set(INDEX_COLUMNS)
        if images:
            keys |= {key for key in self.cameras.values() if key in self.meta.image_keys}
        return sorted(keys)

    def _rows(self, meta: EpisodeMeta, images: bool, tables: dict) -> Any:
        """The episode's rows of its data file (None when the file is missing). v3.0 files hold
        many episodes in global ``index`` order: the rows are a slice, checked, else a filter."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if meta.data_path not in tables:
            path = self.root / meta.data_path
            tables[meta.data_path] = pq.read_table(path, columns=self._columns(images)) if path.is_file() else None
        table = tables[meta.data_path]
        if table is None or meta.rows is None:
            return table
        first = table["index"][0].as_py() if table.num_rows else 0
        start, stop = meta.rows
        rows = table.slice(start - first, stop - start)
        index = rows["index"].to_numpy()
        if (stop > start and rows.num_rows == stop - start and index[0] == start and index[-1] == stop - 1
                and (rows["episode_index"].to_numpy() == meta.index).all()):
            return rows
        return table.filter(pc.equal(table["episode_index"], meta.index))

    def _quarantine(self, report: ReadReport, reason: str, meta: EpisodeMeta) -> None:
        report.quarantined.add(reason)
        report.examples.setdefault(reason, [])
        if len(report.examples[reason]) < 5:
            report.examples[reason].append(f"episode {meta.index}")

    def _episode(self, meta: EpisodeMeta, images: bool, report: ReadReport, tables: dict) -> Episode | None:
        rows = self._rows(meta, images, tables)
        if rows is None:
            self._quarantine(report, "data_missing", meta)
            return None
        if rows.num_rows != meta.length:
            self._quarantine(report, "length_mismatch", meta)
            return None
        frame_index = rows["frame_index"].to_numpy()
        if not np.array_equal(frame_index, np.arange(meta.length)):
            self._quarantine(report, "frame_index_gap", meta)
            return None
        timestamps = rows["timestamp"].to_numpy().astype(np.float64)
        if len(timestamps) > 1 and np.abs(np.diff(timestamps) - 1.0 / self.fps).max() > self.tolerance_s:
            self._quarantine(report, "timestamps_off_grid", meta)
            return None
        state = np.concatenate([part.take(_column(rows, part.key)) for part in self.state], axis=1)
        actions = np.concatenate([part.take(_column(rows, part.key)) for part in self.action], axis=1)
        defect = episode_defect(state, actions, min_steps=self.min_steps)
        if defect is not None:
            self._quarantine(report, defect, meta)
            return None
        frames, reason = self._frames(meta, rows, timestamps, images)
        if reason is not None:
            self._quarantine(report, reason, meta)
            return None
        task_indices = rows["task_index"].to_numpy()
        instructions = tuple(dict.fromkeys(self.meta.tasks.get(int(i), "") for i in task_indices if int(i) in self.meta.tasks))
        instructions = tuple(t for t in instructions if t.strip()) or tuple(meta.tasks)
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
            metadata={"path": str(self.root), "episode_index": meta.index},
        )

    def _frames(self, meta: EpisodeMeta, rows, timestamps: np.ndarray, images: bool) -> tuple[dict, str | None]:
        frames: dict[str, Any] = {}
        for camera, key in self.cameras.items():
            if key in self.meta.image_keys:
                if images:
                    frames[camera] = Frames([cell["bytes"] for cell in rows[key].to_pylist()])
                continue
            span = meta.videos[key]
            path = self.root / span.path
            if not path.is_file():
                return {}, "video_missing"
            if not images:
                continue
            wanted = span.from_timestamp + timestamps
            try:
                held = packet_times(str(path), span.from_timestamp, span.to_timestamp, self.tolerance_s)
            except VideoError:
                return {}, "video_unreadable"
            if len(held) != len(wanted) or np.abs(held - wanted).max(initial=0.0) > self.tolerance_s:
                return {}, "video_frame_count"
            frames[camera] = VideoFrames(str(path), wanted, tolerance_s=self.tolerance_s)
        return frames, None


def _column(rows, key: str) -> np.ndarray:
    """A feature column as float [T, n] (vector features) or [T] (scalars)."""
    import pyarrow as pa

    column = rows[key].combine_chunks()
    kind = column.type
    if pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)
    return column.to_numpy(zero_copy_only=False)


@register_reader("lerobot", kind="robot", options=("path", "repo_id", "revision", "mapping", "tolerance_s"),
                 paths=("path",))
def open_lerobot(options, *, name: str | None, image_size: int, seed: int = 0) -> LeRobotSource:
    """A LeRobot dataset folder (``path``) or hub dataset (``repo_id``, optional ``revision``)."""
    root = resolve_root(options.get("path"), options.get("repo_id"), options.get("revision"))
    return LeRobotSource(root, options.get("mapping") or {}, name=name or "lerobot",
                         tolerance_s=float(options.get("tolerance_s", DEFAULT_TOLERANCE_S)))
