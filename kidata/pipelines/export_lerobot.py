"""``kidata export lerobot``: robot episodes written as a LeRobot v3.0 dataset.

The layout, ``meta/info.json`` keys, parquet schemas and video settings are those the lerobot
package (0.4) writes (compared against ../shared/data/lerobot/bridge_v3, written by lerobot
itself): one data parquet and one mp4 per camera holding the episodes one after another, AV1
(libsvtav1) yuv420p with a keyframe every 2 frames at crf 30, per-episode statistics in
``meta/episodes/`` and global ones in ``meta/stats.json``. Cameras become
``observation.images.<camera>``, state ``observation.state`` and actions ``action``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from kidata.schema import Episode

CODEC_NAMES = {"av1": "libsvtav1", "h264": "libx264"}  # what info.json records -> PyAV encoder
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # LeRobot v3 records q01, q10, q50, q90, q99
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


def feature_stats(values: np.ndarray) -> dict[str, list]:
    """LeRobot's per-feature statistics of values [N, D] (min, max, mean, std, count, quantiles)."""
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    stats = {"min": values.min(0), "max": values.max(0), "mean": values.mean(0), "std": values.std(0),
             "count": np.array([len(values)])}
    for q in QUANTILES:
        stats[f"q{round(q * 100):02d}"] = np.quantile(values, q, axis=0)
    return {key: value.tolist() for key, value in stats.items()}


def image_stats(frames: np.ndarray) -> dict[str, list]:
    """Per-channel statistics of uint8 frames [N, H, W, 3] on LeRobot's [0, 1] scale, shaped [3, 1, 1]."""
    pixels = frames.reshape(-1, 3).astype(np.float64) / 255.0
    stats = feature_stats(pixels)
    return {key: (value if key == "count" else [[[v]] for v in value]) for key, value in stats.items()}


class _VideoWriter:
    """One camera's concatenated mp4: frames appended episode after episode, pts counting frames."""

    def __init__(self, path: Path, fps: float, shape: tuple[int, ...], codec: str, crf: int, gop: int) -> None:
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.shape = shape
        self.container = av.open(str(path), mode="w")
        encoder = CODEC_NAMES[codec]
        self.stream = self.container.add_stream(encoder, rate=int(round(fps)) if float(fps).is_integer() else fps,
                                                options={"crf": str(crf), "g": str(gop)})
        self.stream.height, self.stream.width = shape[0], shape[1]
        self.stream.pix_fmt = "yuv420p"
        self.frames = 0

    def add(self, image: np.ndarray, where: str) -> None:
        import av

        if image.shape != self.shape:
            raise ValueError(f"{where}: frame shape {image.shape} differs from this camera's first frame {self.shape}; "
                             "a LeRobot video holds one frame size")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = self.frames
        self.frames += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


@dataclass
class _Rows:
    """The data parquet's columns, accumulated over episodes."""

    state: list = field(default_factory=list)
    action: list = field(default_factory=list)
    timestamp: list = field(default_factory=list)
    frame_index: list = field(default_factory=list)
    episode_index: list = field(default_factory=list)
    task_index: list = field(default_factory=list)


def export_lerobot(episodes: Iterable[Episode], out: str | Path, *, robot_type: str = "unknown",
                   codec: str = "av1", crf: int = 30, gop: int = 2) -> Path:
    """Writes ``episodes`` (all of one fps, state and action size) as a LeRobot v3.0 dataset in ``out``."""
    import pyarrow as pa

    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its configuration per stream otherwise (1 = errors)
    if codec not in CODEC_NAMES:
        raise ValueError(f"codec {codec!r}: choose one of {sorted(CODEC_NAMES)}")
    root = Path(out)
    if (root / "meta" / "info.json").exists():
        raise FileExistsError(f"{root} already holds a LeRobot dataset; choose a new --out folder")
    rows, tasks, writers, episode_rows = _Rows(), {}, {}, []
    fps = state_dim = action_dim = None
    written = 0
    all_pixels: dict[str, list[np.ndarray]] = {}
    try:
        for number, episode in enumerate(episodes):
            where = f"episode {number} ({episode.episode_id})"
            fps = fps if fps is not None else episode.fps
            state_dim = state_dim if state_dim is not None else episode.state.shape[1]
            action_dim = action_dim if action_dim is not None else episode.actions.shape[1]
            if (episode.fps, episode.state.shape[1], episode.actions.shape[1]) != (fps, state_dim, action_dim):
                raise ValueError(f"{where}: fps {episode.fps}, state {episode.state.shape[1]}, action "
                                 f"{episode.actions.shape[1]} differ from the first episode's ({fps}, {state_dim}, "
                                 f"{action_dim}); a LeRobot dataset has one of each")
            steps = episode.steps
            task = episode.instructions[0] if episode.instructions else ""
            task_index = tasks.setdefault(task, len(tasks))
            start = written  # frames written before this episode
            row = {"episode_index": number, "tasks": [task], "length": steps, "data/chunk_index": 0,
                   "data/file_index": 0, "dataset_from_index": start, "dataset_to_index": start + steps}
            image_stats_columns = {}
            for camera in sorted(episode.images):
                key = f"observation.images.{camera}"
                frames = episode.images[camera]
                first = frames.frame(0)
                if key not in writers:
                    writers[key] = _VideoWriter(root / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0),
                                                fps, first.shape, codec, crf, gop)
                writer = writers[key]
                offset = writer.frames
                images = [first] + [frames.frame(step) for step in range(1, steps)]
                for image in images:
                    writer.add(image, where)
                row.update({f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                            f"videos/{key}/from_timestamp": offset / fps,
                            f"videos/{key}/to_timestamp": (offset + steps) / fps})
                stacked = np.stack(images)
                image_stats_columns.update({f"stats/{key}/{k}": v for k, v in image_stats(stacked).items()})
                all_pixels.setdefault(key, []).append(stacked[:: max(1, steps // 10)])
            row.update(image_stats_columns)  # lerobot's column order: every video location, then statistics
            frame_index = np.arange(steps)
            timestamps = (frame_index / fps).astype(np.float32)
            columns = {"observation.state": episode.state, "action": episode.actions,
                       "timestamp": timestamps[:, None], "frame_index": frame_index[:, None],
                       "episode_index": np.full((steps, 1), number), "index": np.arange(start, start + steps)[:, None],
                       "task_index": np.full((steps, 1), task_index)}
            row.update({f"stats/{key}/{k}": v for key, values in columns.items() for k, v in feature_stats(values).items()})
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            episode_rows.append(row)
            rows.state.append(episode.state.astype(np.float32))
            rows.action.append(episode.actions.astype(np.float32))
            rows.timestamp.append(timestamps)
            rows.frame_index.append(frame_index)
            rows.episode_index.append(np.full(steps, number))
            rows.task_index.append(np.full(steps, task_index))
            written += steps
    finally:
        for writer in writers.values():
            writer.close()
    if not episode_rows:
        raise ValueError("no episodes to export (the source yielded none)")

    state, action = np.concatenate(rows.state), np.concatenate(rows.action)
    total = written
    scalars = {"timestamp": (np.concatenate(rows.timestamp), pa.float32(), "float32"),
               "frame_index": (np.concatenate(rows.frame_index), pa.int64(), "int64"),
               "episode_index": (np.concatenate(rows.episode_index), pa.int64(), "int64"),
               "index": (np.arange(total), pa.int64(), "int64"),
               "task_index": (np.concatenate(rows.task_index), pa.int64(), "int64")}
    vectors = {"observation.state": state, "action": action}
    arrays = {key: pa.FixedSizeListArray.from_arrays(pa.array(value.reshape(-1), pa.float32()), value.shape[1])
              for key, value in vectors.items()}
    arrays.update({key: pa.array(value.astype(dtype.to_pandas_dtype()), dtype) for key, (value, dtype, _) in scalars.items()})
    hf_features = {key: {"feature": {"dtype": "float32", "_type": "Value"}, "length": value.shape[1], "_type": "List"}
                   for key, value in vectors.items()}
    hf_features.update({key: {"dtype": name, "_type": "Value"} for key, (_, _, name) in scalars.items()})
    table = pa.table(arrays).replace_schema_metadata({"huggingface": json.dumps({"info": {"features": hf_features}})})
    _write_parquet(table, root / DATA_PATH.format(chunk_index=0, file_index=0))

    _write_parquet(_tasks_table(tasks), root / "meta" / "tasks.parquet")
    _write_parquet(pa.Table.from_pylist(episode_rows), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")

    global_stats = {key: feature_stats(value) for key, value in vectors.items()}
    global_stats.update({key: feature_stats(value) for key, (value, _, _) in scalars.items()})
    global_stats.update({key: image_stats(np.concatenate(chunks)) for key, chunks in all_pixels.items()})
    (root / "meta" / "stats.json").write_text(json.dumps(global_stats, indent=4) + "\n")

    features: dict[str, Any] = {}
    for key, writer in sorted(writers.items()):
        height, width = writer.shape[:2]
        features[key] = {"dtype": "video", "shape": [height, width, 3], "names": ["height", "width", "channels"],
                         "info": {"video.height": height, "video.width": width, "video.codec": codec,
                                  "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                                  "video.channels": 3, "has_audio": False}}
    features["observation.state"] = {"dtype": "float32", "shape": [state_dim], "names": [f"state_{i}" for i in range(state_dim)]}
    features["action"] = {"dtype": "float32", "shape": [action_dim], "names": [f"action_{i}" for i in range(action_dim)]}
    for key, (_, _, name) in scalars.items():
        features[key] = {"dtype": name, "shape": [1], "names": None}
    info = {"codebase_version": "v3.0", "robot_type": robot_type, "total_episodes": len(episode_rows),
            "total_frames": total, "total_tasks": len(tasks), "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200, "fps": int(fps) if float(fps).is_integer() else fps,
            "splits": {"train": f"0:{len(episode_rows)}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if writers else None, "features": features}
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4) + "\n")
    return root


def _write_parquet(table, path: Path) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _tasks_table(tasks: dict[str, int]):
    """meta/tasks.parquet as pandas writes it (lerobot reads it with pandas): the task strings are
    the index, ``task_index`` the one column."""
    import pyarrow as pa

    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                     "metadata": None},
                    {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object",
                     "metadata": None}],
        "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0"}
    table = pa.table({"task_index": pa.array(list(tasks.values()), pa.int64()),
                      "__index_level_0__": pa.array(list(tasks), pa.large_string())})
    return table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})
