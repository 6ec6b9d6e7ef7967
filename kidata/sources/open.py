"""One entry point from a reader name and options (as a recipe or the command line gives them) to a
source: ``open_robot_source`` for robot readers with keyword options, ``open_reader`` for any
reader with a recipe source's option table."""

from __future__ import annotations

from typing import Any, Mapping

from kidata.sources.base import RobotSource

ROBOT_READERS = ("rlds", "libero_hdf5")


def open_robot_source(
    reader: str,
    *,
    path: str | list[str],
    name: str | None = None,
    dataset: str | None = None,
    mapping: Mapping[str, Any] | None = None,
    split: str = "train",
    action_space: str | None = None,
    annotations: str | None = None,
    skip_corrupt: bool = False,
) -> RobotSource:
    """``reader`` "rlds" needs ``dataset`` (a registry entry) or ``mapping`` (a user's own key
    mapping); ``action_space`` selects DROID's. "libero_hdf5" reads LIBERO demo files or folders."""
    if reader == "rlds":
        from kidata.sources.oxe import lookup
        from kidata.sources.rlds import RldsSource
        from kidata.sources.spec import spec_from_mapping

        if (dataset is None) == (mapping is None):
            raise ValueError("an rlds source needs exactly one of 'dataset' (registry entry) or 'mapping'")
        if mapping is not None:
            spec = spec_from_mapping(name or "custom", mapping)
        elif action_space is not None:
            from kidata.sources.droid import droid_spec

            if not dataset.startswith("droid"):
                raise ValueError(f"action_space is a DROID option; {dataset!r} has one action space")
            spec = droid_spec(action_space, name=dataset)
        else:
            spec = lookup(dataset)
        return RldsSource(str(path), spec, name=name, split=split, annotations=annotations, skip_corrupt=skip_corrupt)
    if reader == "libero_hdf5":
        from kidata.sources.libero import LiberoHdf5Source

        return LiberoHdf5Source(path, name=name or "libero", annotations=annotations)
    raise ValueError(f"unknown robot reader {reader!r}; known: {ROBOT_READERS}")


def open_reader(reader: str, options: Mapping[str, Any], *, name: str, image_size: int, seed: int = 0):
    """Any reader (robot or VLM) from a recipe source's options; ``image_size`` is the mixture's,
    ``seed`` its default for simulated sources."""
    if reader in ROBOT_READERS:
        return open_robot_source(
            reader, path=options["path"], name=name, dataset=options.get("dataset"), mapping=options.get("mapping"),
            split=options.get("split", "train"), action_space=options.get("action_space"),
            annotations=options.get("language_annotations"), skip_corrupt=bool(options.get("skip_corrupt", False)))
    if reader == "metaworld":
        from kidata.sources.metaworld import MetaWorldSource

        return MetaWorldSource(options["tasks"], episodes_per_task=int(options.get("episodes_per_task", 10)),
                               seed=int(options.get("seed", seed)), cameras=options.get("cameras"),
                               image_size=int(options.get("image_size", image_size)),
                               max_steps=int(options.get("max_steps", 300)),
                               goal_marker_scale=float(options.get("goal_marker_scale", 1.0)),
                               privileged_state=bool(options.get("privileged_state", False)), name=name)
    if reader == "metaworld_scenes":
        from kidata.sources.metaworld import MetaWorldSceneSource

        return MetaWorldSceneSource(options["tasks"], scenes_per_task=int(options.get("scenes_per_task", 10)),
                                    seed=int(options.get("seed", seed)), camera=options.get("camera", "corner"),
                                    image_size=int(options.get("image_size", image_size)),
                                    pointing=bool(options.get("pointing", False)), name=name)
    if reader == "coco_captions":
        from kidata.sources.coco import CocoCaptions

        return CocoCaptions(options["annotations"], options["images"], name=name, image_size=image_size)
    if reader == "coco_detection":
        from kidata.sources.coco import CocoDetection

        return CocoDetection(options["instances"], options["images"], name=name, image_size=image_size)
    if reader == "vqav2":
        from kidata.sources.vqav2 import Vqav2

        return Vqav2(options["questions"], options["annotations"], options["images"], name=name,
                     answer=options.get("answer", "multiple_choice"), image_size=image_size)
    if reader.startswith("pixmo_"):
        from kidata.sources.pixmo import PixmoSource

        return PixmoSource(reader.split("_", 1)[1], options["parquet"], options["mirror"], name=name,
                           image_size=image_size)
    raise ValueError(f"unknown reader {reader!r}")
