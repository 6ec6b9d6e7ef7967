"""RLDS / TFDS datasets (OXE, DROID, LIBERO, your own) read with tensorflow-datasets directly.

Any ``<name>/<version>/`` directory with dataset_info.json, features.json and tfrecord shards,
local or remote (gs://, s3:// — whatever tf.io.gfile reaches). TensorFlow is imported only when a
dataset is opened (optional extra ``kidata[rlds]``); the ``rlds`` package is not needed.

Work units are episode ranges of a split (tfds slices such as ``train[10:20]`` resolve to file
offsets), so N workers read disjoint episodes and together read each exactly once. Images are read
as encoded bytes and decoded only when a frame is used.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np

from kidata.schema import Episode, Frames, episode_defect
from kidata.sources.base import ReadReport, WorkUnit, load_annotations, split_range
from kidata.sources.spec import DatasetSpec

# Steps are stacked in batches of this many (a huge single batch stalls TensorFlow on features of
# unknown shape); longer episodes are concatenated from several batches.
_STEP_BATCH = 4096


def _tfds():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as error:  # pragma: no cover - depends on the extra
        raise ImportError("reading RLDS needs the optional extra: pip install 'kidata[rlds]'") from error
    return tf, tfds


def _flat_keys(features: Any, prefix: str = "") -> list[str]:
    _, tfds = _tfds()
    keys = []
    for key, feature in features.items():
        path = f"{prefix}{key}"
        if isinstance(feature, tfds.features.FeaturesDict):
            keys.extend(_flat_keys(feature, path + "/"))
        else:
            keys.append(path)
    return keys


def _lookup(tree: dict, path: str) -> Any:
    node = tree
    for part in path.split("/"):
        node = node[part]
    return node


class RldsSource:
    """Standard episodes from one split of an RLDS dataset directory."""

    kind = "robot"

    def __init__(
        self,
        path: str,
        spec: DatasetSpec,
        *,
        name: str | None = None,
        split: str = "train",
        annotations: str | None = None,
        skip_corrupt: bool = False,
        min_steps: int = 2,
    ) -> None:
        self.path = str(path)
        self.spec = spec
        self.name = name or spec.name
        self.split = split
        self.skip_corrupt = skip_corrupt
        self.min_steps = min_steps
        self._annotations = load_annotations(annotations)
        self._builder = None

    def __getstate__(self) -> dict:
        # Worker processes open their own builder; TensorFlow objects do not travel.
        return {**self.__dict__, "_builder": None}

    # ------------------------------------------------------------------ dataset
    @property
    def builder(self):
        if self._builder is None:
            _, tfds = _tfds()
            self._builder = tfds.builder_from_directory(self.path)
            if self.split not in self._builder.info.splits:
                raise KeyError(f"{self.path}: no split {self.split!r} (splits: {sorted(self._builder.info.splits)})")
            self._check_keys()
        return self._builder

    def _check_keys(self) -> None:
        features = self._builder.info.features
        steps = features["steps"].feature
        existing = set(_flat_keys(steps))
        for key in sorted(self.spec.raw_keys):
            if key not in existing:
                raise KeyError(
                    f"dataset {self.spec.name!r} ({self.path}): key {key!r} not in its steps; "
                    f"keys that exist: {sorted(existing)}"
                )
        metadata = set(_flat_keys(features["episode_metadata"])) if "episode_metadata" in features else set()
        for flag in self.spec.camera_flags.values():
            if flag not in metadata:
                raise KeyError(f"dataset {self.spec.name!r}: episode_metadata lacks {flag!r} (has {sorted(metadata)})")
        if self.spec.episode_filter == "success_in_path" and "file_path" not in metadata:
            raise KeyError(f"dataset {self.spec.name!r}: the success filter needs episode_metadata/file_path")

    def num_episodes(self) -> int:
        return int(self.builder.info.splits[self.split].num_examples)

    def list_units(self, count: int) -> list[WorkUnit]:
        """``count`` disjoint episode ranges covering the split (fewer if it has fewer episodes)."""
        return [WorkUnit(self.name, self.split, a, b) for a, b in split_range(self.num_episodes(), count)]

    def unit_files(self, unit: WorkUnit) -> list[str]:
        instructions = self.builder.info.splits[f"{unit.part}[{unit.start}:{unit.stop}]"].file_instructions
        return sorted({str(i.filename) for i in instructions})

    # ------------------------------------------------------------------ reading
    def _dataset(self, unit: WorkUnit, images: bool = True):
        """Episodes with their steps stacked inside the tf.data graph (one element per episode,
        steps as [T, ...] tensors); without ``images`` the frames are dropped in the graph too.
        Stacking per episode in eager mode cost ~10 eager ops (~4 ms each) per episode."""
        tf, tfds = _tfds()
        observation = self.builder.info.features["steps"].feature["observation"]
        image_keys = [key for key, feature in observation.items() if isinstance(feature, tfds.features.Image)]
        dataset = self.builder.as_dataset(
            split=f"{unit.part}[{unit.start}:{unit.stop}]",
            shuffle_files=False,
            decoders={"steps": {"observation": {k: tfds.decode.SkipDecoding() for k in image_keys}}} if image_keys else None,
            # a unit is one contiguous range: its files in order, no autotuned prefetch of whole episodes
            read_config=tfds.ReadConfig(try_autocache=False, skip_prefetch=True, interleave_cycle_length=1),
        )

        def stack(episode):
            steps = episode["steps"]
            if not images and image_keys:
                steps = steps.map(lambda step: {**step, "observation": {
                    k: v for k, v in step["observation"].items() if k not in image_keys}})
            batched = steps.batch(_STEP_BATCH)
            empty = tf.nest.map_structure(
                lambda spec: tf.zeros([0] + [d or 0 for d in spec.shape[1:]], spec.dtype), batched.element_spec)
            return {**episode, "steps": batched.concatenate(tf.data.Dataset.from_tensors(empty)).take(1).get_single_element()}

        return dataset.map(stack).prefetch(2)

    def read(self, unit: WorkUnit, *, images: bool = True, report: ReadReport | None = None) -> Iterator[Episode]:
        """Episodes of one unit in order. ``images=False`` skips building frames (statistics)."""
        tf, _ = _tfds()
        report = report if report is not None else ReadReport()
        index = unit.start
        dims = None
        try:
            for element in self._dataset(unit, images):
                episode = self._episode(tf, element, index, images, report)
                index += 1
                if episode is None:
                    continue
                shape = (episode.state.shape[1], episode.actions.shape[1])
                if dims is not None and shape != dims:
                    report.quarantined.add("dimension_change")
                    continue
                dims = shape
                yield episode
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
            files = ", ".join(self.unit_files(unit))
            if not self.skip_corrupt:
                raise RuntimeError(f"{self.spec.name}: unreadable tfrecord data in {files}: {error.message}") from error
            report.failed_units.append(unit.key)
            report.notices["failed_units"] += 1

    def episodes(self, *, images: bool = True, report: ReadReport | None = None) -> Iterator[Episode]:
        for unit in self.list_units(1):
            yield from self.read(unit, images=images, report=report)

    def _episode(self, tf, element: dict, index: int, images: bool, report: ReadReport) -> Episode | None:
        metadata = {k: v.numpy() for k, v in element.get("episode_metadata", {}).items()}
        episode_id = f"{self.split}-{index:06d}"
        info: dict[str, Any] = {"path": self.path, "index": index}
        for key, value in metadata.items():
            info[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value.item()
        if self.spec.episode_filter == "success_in_path" and "success" not in str(info.get("file_path", "")):
            report.notices["filtered_unsuccessful"] += 1
            return None
        steps = tf.nest.map_structure(lambda t: t.numpy(), element["steps"])
        if not len(tf.nest.flatten(steps)[0]):
            report.quarantined.add("too_short")
            return None
        state = np.concatenate([p.take(_lookup(steps, p.key)) for p in self.spec.state], axis=1) if self.spec.state \
            else np.zeros((len(tf.nest.flatten(steps)[0]), 0), np.float32)
        actions = np.concatenate([p.take(_lookup(steps, p.key)) for p in self.spec.action], axis=1)
        defect = episode_defect(state, actions, min_steps=self.min_steps)
        if defect is not None:
            report.quarantined.add(defect)
            return None
        frames = {}
        if images:
            for camera, key in self.spec.cameras.items():
                flag = self.spec.camera_flags.get(camera)
                if flag is not None and not bool(metadata[flag]):
                    continue
                camera_frames = Frames(list(steps["observation"][key]))
                if self.spec.blank_cameras_absent and not camera_frames.frame(0).any():
                    continue
                frames[camera] = camera_frames
        return Episode(
            episode_id=episode_id,
            source=self.name,
            state=state,
            actions=actions,
            instructions=self._instructions(steps, report),
            fps=float(self.spec.fps),
            images=frames,
            metadata=info,
            annotations=self._annotations.get(episode_id, ()),
        )

    def _instructions(self, steps: dict, report: ReadReport) -> tuple[str, ...]:
        found: list[str] = []
        for key in self.spec.language:
            values = _lookup(steps, key)
            if self.spec.language_format == "utf8_ids":
                values = [bytes(row[row > 0].astype(np.uint8).tolist()) for row in np.asarray(values)]
            for raw in dict.fromkeys(bytes(v) for v in values):  # each distinct text once
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    text = raw.decode("utf-8", errors="replace")
                    report.notices["non_utf8_instruction"] += 1
                text = text.strip()
                if text and text not in found:
                    found.append(text)
        return tuple(found)
