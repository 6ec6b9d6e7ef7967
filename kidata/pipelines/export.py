"""``kidata export rlds``: any robot source's episodes as an RLDS dataset in TFDS layout, the form
openpi / Octo-style pipelines read. Images are stored as PNG (lossless), so reading the export back
with kidata's RLDS reader gives the same episodes, value for value.

Layout (one record per episode): ``steps`` = {observation: {image_<camera>, state}, action,
language_instruction, is_first, is_last, is_terminal, reward, discount}; ``episode_metadata`` =
{episode_id, file_path}. ``kidata_mapping.json`` beside the dataset is the recipe ``mapping`` that
reads it back (``reader = "rlds"``, ``mapping = ...``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from kidata.schema import Episode

MAPPING_FILE = "kidata_mapping.json"


def export_rlds(episodes: Iterable[Episode], out: str | Path, *, name: str, version: str = "1.0.0",
                split: str = "train") -> Path:
    """Writes the episodes; returns the ``<out>/<name>/<version>`` dataset directory."""
    from kidata.sources.rlds import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow_datasets as tfds

    episodes = list(episodes)
    if not episodes:
        raise ValueError("no episodes to export")
    first = episodes[0]
    cameras = sorted(first.images)
    features = tfds.features.FeaturesDict({
        "steps": tfds.features.Dataset({
            "observation": {
                **{f"image_{camera}": tfds.features.Image(shape=first.images[camera].frame(0).shape, encoding_format="png")
                   for camera in cameras},
                "state": tfds.features.Tensor(shape=(first.state.shape[1],), dtype=np.float32),
            },
            "action": tfds.features.Tensor(shape=(first.actions.shape[1],), dtype=np.float32),
            "language_instruction": tfds.features.Text(),
            "is_first": np.bool_, "is_last": np.bool_, "is_terminal": np.bool_,
            "reward": np.float32, "discount": np.float32,
        }),
        "episode_metadata": {"episode_id": tfds.features.Text(), "file_path": tfds.features.Text()},
    })

    def record(episode: Episode) -> dict:
        if sorted(episode.images) != cameras or episode.state.shape[1] != first.state.shape[1]:
            raise ValueError(f"episode {episode.episode_id}: cameras or state width differ from the first episode's")
        steps = []
        for step in range(episode.steps):
            steps.append({
                "observation": {**{f"image_{c}": episode.images[c].frame(step) for c in cameras},
                                "state": episode.state[step]},
                "action": episode.actions[step],
                "language_instruction": episode.instructions[0] if episode.instructions else "",
                "is_first": step == 0, "is_last": step == episode.steps - 1,
                "is_terminal": step == episode.steps - 1 and bool(episode.metadata.get("success", False)),
                "reward": float(step == episode.steps - 1 and episode.metadata.get("success", False)),
                "discount": 1.0,
            })
        return {"steps": steps, "episode_metadata": {"episode_id": episode.episode_id,
                                                     "file_path": f"{episode.source}/{episode.episode_id}"}}

    # TFDS announces "Downloading and preparing" on stdout and draws progress bars while it writes:
    # nothing is downloaded here, so both are silenced
    tfds.disable_progress_bar()
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), tfds_scratch():
        builder = tfds.dataset_builders.store_as_tfds_dataset(
            name=name, version=version, features=features, data_dir=str(out), disable_shuffling=True,
            split_datasets={split: [(index, record(e)) for index, e in enumerate(episodes)]})
    directory = Path(builder.data_dir)
    mapping = {"cameras": {camera: f"image_{camera}" for camera in cameras}, "state": ["observation/state"],
               "action": ["action"], "fps": float(first.fps), "action_space": "custom"}
    (directory / MAPPING_FILE).write_text(json.dumps(mapping, indent=2, sort_keys=True) + "\n")
    return directory


@contextlib.contextmanager
def tfds_scratch():
    """A new TFDS builder first looks for its metadata on TFDS's GCS bucket, in a
    ``tempfile.mkdtemp("tfds")`` folder it never removes (tfds 4.9.10,
    ``DatasetInfo.initialize_from_bucket``): inside this block such folders land in one that is
    removed on exit, not one per export left in the user's temporary directory."""
    saved = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="kidata-tfds-") as folder:
        tempfile.tempdir = folder
        try:
            yield
        finally:
            tempfile.tempdir = saved
