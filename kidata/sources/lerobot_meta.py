"""A LeRobot dataset's metadata, codebase versions v3.0 and v2.1, read without the lerobot package.

v3.0 (lerobot >= 0.4): ``meta/info.json``, ``meta/tasks.parquet`` (task strings as the pandas index,
``task_index`` column), ``meta/episodes/chunk-*/file-*.parquet`` (one row per episode: its rows
``dataset_from_index:dataset_to_index`` in ``data/chunk-{c}/file-{f}.parquet`` and, per video
feature, its span ``from_timestamp:to_timestamp`` in ``videos/{key}/chunk-{c}/file-{f}.mp4``).
v2.1: ``meta/info.json``, ``meta/tasks.jsonl``, ``meta/episodes.jsonl``, one parquet and one mp4 per
episode (``data_path`` / ``video_path`` templates of info.json with ``episode_chunk``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

SUPPORTED_VERSIONS = ("v3.0", "v2.1")
# Columns every LeRobot data file has besides the dataset's own features.
INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")


MAX_META_BYTES = 64 << 20  # info.json, stats.json: kilobytes in every published dataset
MAX_FPS = 10_000


class LeRobotFormatError(ValueError):
    """The folder is not a LeRobot dataset this reader understands; the message says what is wrong."""


@dataclass(frozen=True)
class VideoSpan:
    """Where one episode's frames of one camera lie: a file and the time range inside it (seconds)."""

    path: str
    from_timestamp: float
    to_timestamp: float


@dataclass(frozen=True)
class EpisodeMeta:
    """One episode as the metadata describes it. ``rows`` is the [start, stop) row range inside
    ``data_path`` (v3.0 files hold many episodes; v2.1 files one, so the whole file)."""

    index: int
    length: int
    tasks: tuple[str, ...]
    data_path: str
    rows: tuple[int, int] | None
    videos: Mapping[str, VideoSpan] = field(default_factory=dict)


@dataclass(frozen=True)
class LeRobotMeta:
    root: str
    version: str
    fps: float
    features: Mapping[str, Any]
    tasks: Mapping[int, str]
    episodes: tuple[EpisodeMeta, ...]

    @property
    def video_keys(self) -> tuple[str, ...]:
        return tuple(k for k, v in self.features.items() if v.get("dtype") == "video")

    @property
    def image_keys(self) -> tuple[str, ...]:
        return tuple(k for k, v in self.features.items() if v.get("dtype") == "image")

    def feature_names(self) -> list[str]:
        return sorted(self.features)

    @classmethod
    def load(cls, root: str | Path) -> "LeRobotMeta":
        root = Path(root)
        info_path = root / "meta" / "info.json"
        if not info_path.is_file():
            raise LeRobotFormatError(f"{root} is not a LeRobot dataset: {info_path} is missing")
        info = read_json(info_path)
        if not isinstance(info, dict):
            raise LeRobotFormatError(f"{info_path}: expected a JSON object, got {type(info).__name__}")
        version = info.get("codebase_version")
        if version not in SUPPORTED_VERSIONS:
            raise LeRobotFormatError(
                f"{info_path}: codebase_version {version!r} is not supported (this reader knows "
                f"{', '.join(SUPPORTED_VERSIONS)}); convert it with lerobot's conversion scripts")
        for key in ("fps", "features", "data_path"):
            if key not in info:
                raise LeRobotFormatError(f"{info_path}: missing key {key!r} (keys: {sorted(info)})")
        fps = info["fps"]
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= MAX_FPS:
            raise LeRobotFormatError(f"{info_path}: fps = {fps!r}; a dataset's frame rate is a number > 0 and <= {MAX_FPS}")
        features = info["features"]
        if not isinstance(features, dict) or not all(isinstance(v, dict) for v in features.values()):
            raise LeRobotFormatError(f"{info_path}: 'features' is not a table of feature descriptions")
        video_keys = [k for k, v in features.items() if v.get("dtype") == "video"]
        if video_keys and "video_path" not in info:
            raise LeRobotFormatError(f"{info_path}: video features {video_keys} but no 'video_path' template")
        reader = _v30 if version == "v3.0" else _v21
        tasks, episodes = reader(root, info, video_keys)
        return cls(str(root), version, float(info["fps"]), features, tasks, tuple(episodes))


def read_json(path: Path, max_bytes: int = MAX_META_BYTES):
    """A metadata JSON file, read up to ``max_bytes`` (its size is data too); a file too big, not
    UTF-8 or not JSON is a LeRobotFormatError naming it."""
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise LeRobotFormatError(f"{path}: larger than {max_bytes >> 20} MiB; LeRobot metadata files are small")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise LeRobotFormatError(f"{path}: not valid JSON ({error}); the file is truncated or damaged") from None


def read_parquet(path: Path, columns=None):
    """A parquet file's table (``columns``: those only); an unreadable file (truncated, not parquet)
    is a LeRobotFormatError naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as handle:
            return handle.read(columns=columns)
    except (pa.ArrowException, OSError) as error:
        raise LeRobotFormatError(f"{path}: not a readable parquet file ({error}); the file is truncated or "
                                 "damaged") from None


def _read_parquet_rows(path: Path) -> list[dict]:
    return read_parquet(path).to_pylist()


def _v30(root: Path, info: dict, video_keys: list[str]) -> tuple[dict[int, str], list[EpisodeMeta]]:
    tasks_path = root / "meta" / "tasks.parquet"
    if not tasks_path.is_file():
        raise LeRobotFormatError(f"{root}: v3.0 dataset without {tasks_path.relative_to(root)}")
    tasks = {}
    for row in _read_parquet_rows(tasks_path):
        # written from pandas: the task string is the index column
        text = row.get("task", row.get("__index_level_0__"))
        tasks[int(row["task_index"])] = str(text)
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise LeRobotFormatError(f"{root}: v3.0 dataset without meta/episodes/chunk-*/file-*.parquet")
    episodes = []
    for file in files:
        for row in _read_parquet_rows(file):
            data_path = info["data_path"].format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
            videos = {}
            for key in video_keys:
                prefix = f"videos/{key}/"
                if prefix + "chunk_index" not in row:
                    raise LeRobotFormatError(f"{file}: episode {row['episode_index']} has no video location for {key!r}")
                path = info["video_path"].format(video_key=key, chunk_index=row[prefix + "chunk_index"],
                                                 file_index=row[prefix + "file_index"])
                videos[key] = VideoSpan(path, float(row[prefix + "from_timestamp"]), float(row[prefix + "to_timestamp"]))
            episodes.append(EpisodeMeta(
                index=int(row["episode_index"]), length=int(row["length"]), tasks=tuple(row.get("tasks") or ()),
                data_path=data_path, rows=(int(row["dataset_from_index"]), int(row["dataset_to_index"])),
                videos=videos))
    return tasks, sorted(episodes, key=lambda e: e.index)


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise LeRobotFormatError(f"v2.1 dataset without {path}")
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as error:
                raise LeRobotFormatError(f"{path}, line {number}: not valid JSON ({error})") from None
    return rows


def _v21(root: Path, info: dict, video_keys: list[str]) -> tuple[dict[int, str], list[EpisodeMeta]]:
    tasks = {int(row["task_index"]): str(row["task"]) for row in _jsonl(root / "meta" / "tasks.jsonl")}
    chunk_size = int(info.get("chunks_size", 1000))
    episodes = []
    for row in _jsonl(root / "meta" / "episodes.jsonl"):
        index = int(row["episode_index"])
        chunk = index // chunk_size
        videos = {key: VideoSpan(info["video_path"].format(episode_chunk=chunk, video_key=key, episode_index=index),
                                 0.0, float(row["length"]) / float(info["fps"]))
                  for key in video_keys}
        episodes.append(EpisodeMeta(
            index=index, length=int(row["length"]), tasks=tuple(row.get("tasks") or ()),
            data_path=info["data_path"].format(episode_chunk=chunk, episode_index=index), rows=None, videos=videos))
    return tasks, sorted(episodes, key=lambda e: e.index)
