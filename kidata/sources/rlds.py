"""RLDS / TFDS datasets (OXE, DROID, LIBERO, your own) read with tensorflow-datasets directly.

Any ``<name>/<version>/`` directory with dataset_info.json, features.json and tfrecord shards,
local or remote (gs://, s3:// — whatever tf.io.gfile reaches). TensorFlow is imported only when a
dataset is opened (optional extra ``kidata[rlds]``); the ``rlds`` package is not needed.

Work units are episode ranges of a split (tfds slices such as ``train[10:20]`` resolve to file
offsets), so N workers read disjoint episodes and together read each exactly once. Images are read
as encoded bytes and decoded only when a frame is used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from kidata.schema import Episode, Frames, episode_defect
from kidata.sources.base import ReadReport, WorkUnit, load_annotations, split_range
from kidata.sources.registry import lookup, register_reader
from kidata.sources.spec import DatasetSpec, noop_mask, spec_from_mapping


def quiet_tensorflow() -> None:
    """Before TensorFlow's first import: its C++ INFO lines off, and oneDNN's banner with them (we
    only parse records with TF; oneDNN speeds matmuls we never run). Settings a user made win."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _tfds():
    quiet_tensorflow()
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as error:  # pragma: no cover - depends on the extra
        raise ImportError("reading RLDS needs the optional extra: pip install 'kidata[rlds]'") from error
    return tf, tfds


class _EpisodeParser:
    """Serialized RLDS episode -> {"steps": {key: [T, ...] tensor}, "episode_metadata": {...}}.

    The proto is parsed once and each used step feature decoded as a whole [T, ...] column
    (``decode_batch_example``); images stay encoded bytes, features the spec does not use are
    not decoded at all. tfds's own decoding slices an episode into a nested dataset of steps,
    decodes them one at a time in a parallel map (threads that compete with the other build
    workers) and needs batching back; it also decoded every unused feature, such as 512-float
    language embeddings. Traced once per process and key set (``_episode_parser``)."""

    def __init__(self, builder, step_keys: frozenset[str]) -> None:
        tf, tfds = _tfds()
        from tensorflow_datasets.core import example_parser

        features = builder.info.features
        parser = example_parser.ExampleParser(features.get_serialized_info())

        def select(feature, raw: dict, prefix: str) -> dict:
            out = {}
            for key, child in feature.items():
                path = prefix + key
                if isinstance(child, tfds.features.FeaturesDict):
                    inner = select(child, raw[key], path + "/")
                    if inner:
                        out[key] = inner
                elif path in step_keys:
                    image = isinstance(child, tfds.features.Image)
                    out[key] = raw[key] if image else child.decode_batch_example(raw[key])
            return out

        def parse(serialized):
            raw = parser.parse_example(serialized)
            episode = {"steps": select(features["steps"].feature, raw["steps"], "")}
            if "episode_metadata" in features:
                episode["episode_metadata"] = features["episode_metadata"].decode_example(raw["episode_metadata"])
            return episode

        # no Python control flow to convert: autograph's source parsing cost 0.2 s per trace
        self._parse = tf.function(parse, autograph=False)
        self._concrete = None

    def concrete(self):
        if self._concrete is None:
            tf, _ = _tfds()
            self._concrete = self._parse.get_concrete_function(tf.TensorSpec([], tf.string))
        return self._concrete

    def __call__(self, serialized):
        return self.concrete()(serialized)


_PARSERS: dict[tuple[str, frozenset[str]], _EpisodeParser] = {}


def _episode_parser(builder, step_keys: frozenset[str]) -> _EpisodeParser:
    """One parser (one trace) per dataset directory, key set and process."""
    key = (str(builder.data_dir), step_keys)
    if key not in _PARSERS:
        _PARSERS[key] = _EpisodeParser(builder, step_keys)
    return _PARSERS[key]


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


def _json_flat_keys(feature: dict, prefix: str = "") -> list[str]:
    """``_flat_keys`` over a features.json node (nested FeaturesDicts are folders, the rest leaves)."""
    keys = []
    for key, child in feature["featuresDict"]["features"].items():
        path = f"{prefix}{key}"
        keys.extend(_json_flat_keys(child, path + "/") if "featuresDict" in child else [path])
    return keys


TFDS_FEATURE_MODULE = "tensorflow_datasets.core.features."


def check_feature_classes(path: str) -> None:
    """Refuses a dataset folder whose feature spec names a class outside TFDS's own features: tfds
    imports the module of every class name it finds that it has not registered (a crafted file
    made it import and run any installed module). Every form tfds accepts is checked, in both
    files it reads features from: the proto form (``pythonClassName``) and the legacy form
    (``{"type": "module.Class", "content": ...}``), in features.json and in dataset_info.json's
    ``features``. A file that cannot be read is left for tfds to report."""
    import fsspec

    for name, legacy in (("features.json", True), ("dataset_info.json", False)):
        try:
            with fsspec.open(f"{path.rstrip('/')}/{name}", "r") as handle:
                tree = json.load(handle)
        except (OSError, ValueError):
            continue
        stack = [tree]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                for key in ("pythonClassName", "python_class_name", *(("type",) if legacy else ())):
                    value = node.get(key)
                    # a name without a dot is looked up among tfds's registered features, never imported
                    if isinstance(value, str) and "." in value and not value.startswith(TFDS_FEATURE_MODULE):
                        raise ValueError(f"{path}/{name} names feature class {value!r} ({key}), not one of "
                                         f"TFDS's own ({TFDS_FEATURE_MODULE}*): refusing to let tfds import it")
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)


def _lookup(tree: dict, path: str) -> Any:
    """The value at a "/"-joined path. A feature name may itself contain "/" (kuka's
    ``clip_function_input/base_pose_tool_reached``, bc_z's ``present/xyz``): at each level the
    longest run of path segments that is a key wins."""
    node, parts = tree, path.split("/")
    while parts:
        for size in range(len(parts), 0, -1):
            key = "/".join(parts[:size])
            if isinstance(node, dict) and key in node:
                node, parts = node[key], parts[size:]
                break
        else:
            raise KeyError(f"{path!r}: no key {parts[0]!r} at this level (keys: {sorted(node) if isinstance(node, dict) else []})")
    return node


def _numeric(value: Any, key: str) -> np.ndarray:
    """A state or action feature as numbers [T, D]. Byte strings are the ZLIB-compressed float32
    vectors kuka stores (decoded as Octo and OpenVLA do); other bytes are refused naming the key."""
    array = np.asarray(value)
    if array.dtype.kind not in "OSU":
        return array
    import zlib

    try:
        return np.stack([np.frombuffer(zlib.decompress(bytes(item)), dtype=np.float32) for item in array])
    except (zlib.error, TypeError) as error:
        raise ValueError(f"{key!r} holds bytes that are not ZLIB-compressed float32 vectors ({error}); map a numeric "
                         "feature") from None


def _check_local_directory(path: str) -> None:
    """A local dataset folder that cannot be one, refused in a sentence before TFDS sees it (remote
    URLs are left to tf.io.gfile)."""
    if "://" in path:
        return
    folder = Path(path)
    hint = "an rlds source's path is the dataset's <name>/<version> folder (dataset_info.json, features.json, tfrecords)"
    if not folder.exists():
        raise FileNotFoundError(f"{path}: no such folder; {hint}")
    if not (folder / "dataset_info.json").is_file():
        inside = sorted(p.name for p in folder.iterdir())[:8] if folder.is_dir() else []
        raise FileNotFoundError(f"{path}: no dataset_info.json here (found {inside}); {hint}")


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
        self._json: tuple[dict, dict] | bool | None = None
        self._watched: dict | None = None  # conversion_report's collection, while it runs
        _check_local_directory(self.path)

    def __getstate__(self) -> dict:
        # Worker processes open their own builder; TensorFlow objects do not travel.
        return {**self.__dict__, "_builder": None}

    # ------------------------------------------------------------------ dataset
    @property
    def builder(self):
        if self._builder is None:
            _, tfds = _tfds()
            check_feature_classes(self.path)
            self._builder = tfds.builder_from_directory(self.path)
            if self.split not in self._builder.info.splits:
                raise KeyError(f"{self.path}: no split {self.split!r} (splits: {sorted(self._builder.info.splits)})")
            features = self._builder.info.features
            self._check_keys(_flat_keys(features["steps"].feature),
                             _flat_keys(features["episode_metadata"]) if "episode_metadata" in features else [])
        return self._builder

    def _metadata_json(self) -> tuple[dict, dict] | None:
        """(dataset_info.json, features.json) read as plain JSON, or None where they cannot be read
        or have another layout. A build's coordinator lists units and checks keys from them
        without importing TensorFlow (seconds per process, while its workers import it too)."""
        if self._json is None:
            self._json = False
            try:
                import fsspec

                def load(name: str) -> dict:
                    with fsspec.open(f"{self.path.rstrip('/')}/{name}", "r") as handle:
                        return json.load(handle)

                info, features = load("dataset_info.json"), load("features.json")["featuresDict"]["features"]
                splits = {split["name"]: split for split in info["splits"]}
                steps = features["steps"]["sequence"]["feature"]["featuresDict"]["features"]
                if self.split in splits and "shardLengths" in splits[self.split] and isinstance(steps, dict):
                    self._json = (info, features)
            except Exception:  # noqa: BLE001 - any problem: TensorFlow's builder decides
                self._json = False
        return self._json or None

    def _check_keys(self, step_keys: list[str], metadata_keys: list[str]) -> None:
        existing, metadata = set(step_keys), set(metadata_keys)
        for key in sorted(self.spec.raw_keys):
            if key not in existing:
                raise KeyError(
                    f"dataset {self.spec.name!r} ({self.path}): key {key!r} not in its steps; "
                    f"keys that exist: {sorted(existing)}"
                )
        for flag in self.spec.camera_flags.values():
            if flag not in metadata:
                raise KeyError(f"dataset {self.spec.name!r}: episode_metadata lacks {flag!r} (has {sorted(metadata)})")
        if self.spec.episode_filter == "success_in_path" and "file_path" not in metadata:
            raise KeyError(f"dataset {self.spec.name!r}: the success filter needs episode_metadata/file_path")

    def warm_up(self) -> None:
        """Imports TensorFlow, opens the builder and traces the episode parser (build workers call
        this when they start)."""
        for images in (False, True):
            _episode_parser(self.builder, self._step_keys(images)).concrete()

    def num_episodes(self) -> int:
        metadata = self._metadata_json()
        if metadata is None:
            return int(self.builder.info.splits[self.split].num_examples)
        info, features = metadata
        self._check_keys(_json_flat_keys(features["steps"]["sequence"]["feature"]),
                         _json_flat_keys(features["episode_metadata"]) if "episode_metadata" in features else [])
        split = next(split for split in info["splits"] if split["name"] == self.split)
        return sum(int(length) for length in split["shardLengths"])

    def list_units(self, count: int) -> list[WorkUnit]:
        """``count`` disjoint episode ranges covering the split (fewer if it has fewer episodes)."""
        return [WorkUnit(self.name, self.split, a, b) for a, b in split_range(self.num_episodes(), count)]

    def unit_files(self, unit: WorkUnit) -> list[str]:
        instructions = self.builder.info.splits[f"{unit.part}[{unit.start}:{unit.stop}]"].file_instructions
        return sorted({str(i.filename) for i in instructions})

    # ------------------------------------------------------------------ reading
    def _step_keys(self, images: bool) -> frozenset[str]:
        cameras = {f"observation/{key}" for key in self.spec.cameras.values()}
        return frozenset(self.spec.raw_keys if images else self.spec.raw_keys - cameras)

    def record_datasets(self, unit: WorkUnit) -> Iterator[Any]:
        """The unit's serialized episodes as one ``tf.data.Dataset`` per file it touches, read
        straight from the files (tfds file instructions, through tfds's adapter for the file
        format), in episode order.

        Autotuning is off: with it, pool workers stalled in an iterator's teardown at a unit's
        end (py-spy: EagerTensor dealloc waiting on a lock, the process idle) for up to ~2 s, a
        2-worker job's wall 5.2 s against 3.3 s of CPU; without it wall == CPU. A sequential read
        has nothing to tune."""
        from tensorflow_datasets.core import file_adapters

        tf, _ = _tfds()
        adapter = file_adapters.ADAPTER_FOR_FORMAT[self.builder.info.file_format]
        options = tf.data.Options()
        options.autotune.enabled = False
        for instruction in self.builder.info.splits[f"{unit.part}[{unit.start}:{unit.stop}]"].file_instructions:
            records = adapter.make_tf_data(instruction.filename).skip(instruction.skip).take(instruction.take)
            yield records.with_options(options)

    def _episodes_tf(self, unit: WorkUnit, images: bool) -> Iterator[dict]:
        """One unit's episodes as dicts of tensors, steps stacked to [T, ...], images as encoded
        bytes, parsed by ``_episode_parser``: building a tfds input pipeline per unit instead
        traced its decoding graph every time, ~0.3 s per unit, most of the statistics pass."""
        parse = _episode_parser(self.builder, self._step_keys(images))
        for records in self.record_datasets(unit):
            for serialized in records:
                yield parse(serialized)

    def read(self, unit: WorkUnit, *, images: bool = True, report: ReadReport | None = None) -> Iterator[Episode]:
        """Episodes of one unit in order. ``images=False`` skips building frames (statistics)."""
        tf, _ = _tfds()
        report = report if report is not None else ReadReport()
        index = unit.start
        dims = None
        try:
            for element in self._episodes_tf(unit, images):
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

    def _take(self, part, steps: dict) -> np.ndarray:
        raw = _numeric(_lookup(steps, part.key), part.key)
        taken = part.take(raw)
        if self._watched is not None and part.transform != "identity":
            values = self._watched.setdefault(part.text, (set(), set()))
            array = raw[:, None] if raw.ndim == 1 else raw.reshape(len(raw), -1)
            values[0].update(np.unique(array[:, part.start : part.stop]).round(4).tolist())
            values[1].update(np.unique(taken).round(4).tolist())
        return taken

    def conversion_report(self, max_episodes: int = 10) -> dict[str, tuple[list[float], list[float]]]:
        """Per converted part (gripper conventions), the values seen before and after conversion
        in the first episodes: an inverted or mis-scaled gripper shows at a glance."""
        self._watched = {}
        try:
            for count, _ in enumerate(self.read(self.list_units(1)[0], images=False)):
                if count + 1 >= max_episodes:
                    break
            return {text: (sorted(raw), sorted(converted)) for text, (raw, converted) in self._watched.items()}
        finally:
            self._watched = None

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
        length = len(tf.nest.flatten(steps)[0])
        if not length:
            report.quarantined.add("too_short")
            return None
        state = np.concatenate([self._take(p, steps) for p in self.spec.state], axis=1) if self.spec.state \
            else np.zeros((length, 0), np.float32)
        actions = np.concatenate([self._take(p, steps) for p in self.spec.action], axis=1)
        keep = slice(None)
        if self.spec.drop_noops:  # judged on the standardized actions (gripper last, 1 = open)
            noop = noop_mask(actions)
            report.notices["noop_steps_removed"] += int(noop.sum())
            keep = np.flatnonzero(~noop)
            state, actions = state[keep], actions[keep]
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
                encoded = list(steps["observation"][key])
                camera_frames = Frames(encoded if isinstance(keep, slice) else [encoded[i] for i in keep])
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


@register_reader("rlds", kind="robot", paths=("path", "language_annotations", "mapping"),
                 options=("path", "dataset", "mapping", "split", "action_space", "language_annotations", "skip_corrupt"))
def open_rlds(options, *, name: str | None, image_size: int, seed: int = 0) -> RldsSource:
    """``dataset`` (a registry entry) or ``mapping`` (a user's own key mapping), exactly one;
    ``action_space`` selects DROID's."""
    dataset, mapping, action_space = options.get("dataset"), options.get("mapping"), options.get("action_space")
    if (dataset is None) == (mapping is None):
        raise ValueError("an rlds source needs exactly one of 'dataset' (registry entry) or 'mapping'")
    if isinstance(mapping, str):  # a JSON file, e.g. the kidata_mapping.json `kidata export rlds` writes
        mapping = _read_mapping(mapping)
    if mapping is not None:
        spec = spec_from_mapping(name or "custom", mapping)
    elif action_space is not None:
        from kidata.sources.datasets.droid import droid_spec

        if not dataset.startswith("droid"):
            raise ValueError(f"action_space is a DROID option; {dataset!r} has one action space")
        spec = droid_spec(action_space, name=dataset)
    else:
        spec = lookup(dataset)
    return RldsSource(str(options["path"]), spec, name=name, split=options.get("split", "train"),
                      annotations=options.get("language_annotations"),
                      skip_corrupt=bool(options.get("skip_corrupt", False)))


def _read_mapping(path: str) -> dict:
    import json

    try:
        mapping = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"mapping {path}: no such file (a JSON object with cameras, state, action, fps)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"mapping {path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(mapping, dict):
        raise ValueError(f"mapping {path}: expected a JSON object with cameras, state, action, fps")
    return mapping

