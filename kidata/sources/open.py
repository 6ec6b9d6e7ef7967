"""One entry point from a reader name and options (as a recipe or the command line gives them) to a
robot source."""

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
