"""Pass 2 of a build: every unit of every source becomes samples written into its own shards; a
unit's completion record is written only after its shards are in place, so a killed build resumes
by skipping recorded units. Units are fixed by the recipe (``units_per_source``), not by the number
of workers, so any engine and worker count gives byte-identical shards."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from kidata.delta import check_delta_mask, episode_delta_chunks
from kidata.hashing import in_holdout, json_sha256, stable_fraction
from kidata.normalize import NormStats, normalize
from kidata.pipelines.recipe import Recipe
from kidata.pipelines.shards import ShardWriter, jpeg_bytes, sample_key, sample_members
from kidata.pipelines.stats_pass import STATE_DIR
from kidata.pipelines.storage import output_fs, write_text
from kidata.schema import Sample
from kidata.sources.base import ReadReport, WorkUnit

# Robot samples are encoded in blocks of this many steps: the block's prompts and tokens are built,
# then all its frames decoded and JPEG-encoded, then its samples written, each in a tight loop.
# Alternating them step by step kept evicting each other's code and data from the caches: the
# non-image work of a unit took ~2.0-2.5 s per 3200 steps that way and ~1.4-1.5 s in blocks (same
# bytes; docs/results/build.md). A block holds its decoded frames: 32 steps x 3 cameras of 224x224
# is ~14 MB.
ENCODE_BLOCK_STEPS = 32




@dataclass(frozen=True)
class EncodeContext:
    """Everything a worker needs to encode units; picklable, independent of the engine."""

    recipe: Recipe
    out: str
    fast_files: dict[str, str]
    norm_stats: dict[str, dict]
    action_dim: int
    build_id: str = ""  # written into every sample's meta.json ("build"), checked by ``kidata verify``
    held_out: Mapping[str, str] = field(default_factory=dict)  # source -> the episode held out when none fell under the fraction


_WORKER_CACHE: dict[str, Any] = {}


def context_encoder(context: EncodeContext):
    """The build's SampleEncoder (built once per process and recipe): token-range collisions and
    tokenizer problems surface here, before any unit runs."""
    from kidata.tokenizers import action_tokenizer_from_files
    from kidata.tokenizers.prompt import SampleEncoder
    from kidata.tokenizers.text import TextTokenizer

    key = json_sha256(context.fast_files) + context.recipe.sha256
    if _WORKER_CACHE.get("key") != key:
        mixture = context.recipe.mixture
        text = TextTokenizer.load(mixture.text_tokenizer, base_dir=context.recipe.base_dir)
        encoder = SampleEncoder.from_settings(text, action_tokenizer_from_files(context.fast_files), asdict(mixture),
                                              uses_loc_tokens=any(s.uses_loc_tokens for s in context.recipe.sources))
        _WORKER_CACHE.update(key=key, encoder=encoder)
    return _WORKER_CACHE["encoder"]


def warm_up_worker(recipe: Recipe) -> None:
    """Pool worker start: TensorFlow's thread pools limited to one thread each (a worker is one
    core's worth of work; pools sized to the machine spin on the cores of the other workers;
    ~5% of a 2-worker build's pass 2 here), then ``warm_up_build``. Settings already in the
    environment win."""
    import os

    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    warm_up_build(recipe)


def warm_up_build(recipe: Recipe) -> None:
    """Loads what units need before the first one arrives: the encoding stack (tokenizers, scipy's
    DCT, the JPEG codec: imported inside the first pass-2 unit they took ~8% of a 2-worker pass 2)
    and every source of the recipe (TensorFlow, tfds builders, traced parsers)."""
    import fsspec  # noqa: F401
    import regex  # noqa: F401
    import scipy.fft  # noqa: F401
    import sentencepiece  # noqa: F401
    import simplejpeg  # noqa: F401
    import tiktoken  # noqa: F401
    import tokenizers  # noqa: F401

    import kidata.images  # noqa: F401
    import kidata.tokenizers.fast  # noqa: F401
    import kidata.tokenizers.prompt  # noqa: F401
    import kidata.tokenizers.text  # noqa: F401

    for source in recipe.sources:
        warm_up = getattr(recipe.open(source), "warm_up", None)
        if warm_up is not None:
            warm_up()


def encode_unit(context: EncodeContext, source_name: str, unit: WorkUnit, unit_index: int) -> dict:
    """Writes one unit's shards, then its completion record; returns the record. Counts
    ``image_seconds``: decoding and resizing robot frames and encoding every output JPEG (VLM
    readers decode their images themselves), the build's share of the benchmark's floor."""
    from kidata.pipelines.engine import counted_seconds
    from kidata.tokenizers.prompt import SampleRejected

    recipe, mixture = context.recipe, context.recipe.mixture
    source_config = recipe.source(source_name)
    source = recipe.open(source_config)
    from kidata.tokenizers.prompt import EncodingStats

    encoder = context_encoder(context)
    encoder.stats = EncodingStats()  # counts per unit, whatever ran before in this worker
    fs, root = output_fs(context.out)
    holdout = source_config.holdout if source_config.holdout is not None else mixture.holdout
    target = int(mixture.shard_size_mb * 1024 * 1024)
    writers = {split: ShardWriter(fs, f"{root}/{source_name}", f"{source_name}-{split}-u{unit_index:04d}", split, target)
               for split in ("train", "val")}
    report = ReadReport()
    counts = {"episodes": 0, "samples": 0}
    rejected: dict[str, int] = {}

    def write_samples(split: str, items: list[tuple[str, Callable[[], Sample], Callable[[], dict]]]) -> None:
        """items: (key, build the sample, load its images as uint8 [S, S, 3] by camera); a
        rejected sample's images are never loaded."""
        built = []
        for key, build_sample, load_images in items:
            try:
                built.append((key, build_sample(), load_images))
            except SampleRejected as rejection:
                rejected[rejection.reason] = rejected.get(rejection.reason, 0) + 1
        with counted_seconds("image_seconds"):
            decoded = [load_images() for _, _, load_images in built]
            encoded = [{camera: jpeg_bytes(image, mixture.jpeg_quality) for camera, image in images.items()}
                       for images in decoded]
        for (key, sample, _), images in zip(built, encoded):
            writers[split].write(key, sample_members(sample, images, build_id=context.build_id))
            counts["samples"] += 1

    if source_config.kind == "robot":
        _encode_robot_unit(context, source, source_name, unit, holdout, encoder, report, counts, write_samples)
    else:
        _encode_vlm_unit(context, source, source_name, unit, holdout, encoder, report, counts, write_samples)
    shards = [info.to_json() for split in ("train", "val") for info in writers[split].close()]
    for shard in shards:
        shard["path"] = f"{source_name}/{shard['path']}"
    record = {"source": source_name, "unit": unit.key, "unit_index": unit_index, "shards": shards, **counts,
              "quarantined": report.quarantined.as_dict(), "quarantine_examples": report.examples,
              "notices": dict(sorted(report.notices.items())), "rejected": dict(sorted(rejected.items())),
              "clipped_state_values": encoder.stats.clipped_state_values}
    write_text(fs, f"{root}/{STATE_DIR}/units/{source_name}-{unit_index:04d}.json", json.dumps(record, sort_keys=True))
    return record


def _encode_robot_unit(context, source, source_name, unit, holdout, encoder, report, counts, write_samples) -> None:
    from kidata.images import resize_with_pad

    mixture = context.recipe.mixture
    stats = NormStats.from_json(context.norm_stats[source_name])
    horizon = mixture.action_horizon
    delta_mask = context.recipe.source(source_name).delta_mask
    for episode in source.read(unit, images=True, report=report):
        counts["episodes"] += 1
        chosen = context.held_out.get(source_name) == episode.episode_id
        split = "val" if chosen or in_holdout(source_name, episode.episode_id, holdout) else "train"
        state = normalize(episode.state, stats.state, mixture.normalization).astype(np.float32)
        steps = range(0, episode.steps, mixture.step_stride)
        chunks = np.zeros((len(steps), horizon, context.action_dim), dtype=np.float32)
        if delta_mask is None:
            actions = normalize(episode.actions, stats.actions, mixture.normalization).astype(np.float32)
            index = np.minimum(np.arange(horizon)[None, :] + np.asarray(steps)[:, None], episode.steps - 1)  # [N, H]
            chunks[:, :, : actions.shape[1]] = actions[index]
        else:  # relative to each chunk's own first state, then normalized by the delta statistics
            mask = check_delta_mask(delta_mask, state_dim=episode.state.shape[1], action_dim=episode.actions.shape[1],
                                    where=f"source {source_name!r}")
            relative = episode_delta_chunks(episode.state, episode.actions, horizon, mask)[0][list(steps)]
            chunks[:, :, : episode.actions.shape[1]] = normalize(relative, stats.actions, mixture.normalization)
        action_ids = encoder.action_ids_batch(chunks)
        block = []
        for row, step in enumerate(steps):
            chunk, ids = chunks[row], action_ids[row]
            valid = np.arange(step, step + horizon) < episode.steps
            choice = int(stable_fraction(mixture.seed, "instruction", episode.episode_id, step)
                         * max(1, len(episode.instructions)))
            instruction = episode.instructions[choice] if episode.instructions else ""
            meta = {"source": source_name, "episode": episode.episode_id, "step": step,
                    "action_dim": int(episode.actions.shape[1])}

            def build(step=step, chunk=chunk, valid=valid, instruction=instruction, meta=meta, ids=ids):
                sample = encoder.robot(instruction, state[step], chunk, valid, subtask=episode.annotation_at(step),
                                       meta=meta, action_ids=ids)
                sample.actions = chunk[:, : episode.actions.shape[1]]  # stored at the source's own dimension
                return sample

            def load_images(step=step):
                return {camera: resize_with_pad(frames.frame(step), mixture.image_size)
                        for camera, frames in episode.images.items()}

            block.append((sample_key(episode.episode_id, step), build, load_images))
            if len(block) == ENCODE_BLOCK_STEPS:
                write_samples(split, block)
                block = []
        if block:
            write_samples(split, block)


def _encode_vlm_unit(context, source, source_name, unit, holdout, encoder, report, counts, write_samples) -> None:
    mixture = context.recipe.mixture
    for example in source.read(unit, report=report):
        counts["episodes"] += 1
        split = "val" if in_holdout(source_name, example.example_id, holdout) else "train"
        meta = {"source": source_name, "example": example.example_id}
        if example.task == "caption":
            if mixture.caption_choice == "all":
                choices = list(enumerate(example.targets))
            else:
                pick = int(stable_fraction(mixture.seed, "caption", example.example_id) * len(example.targets))
                choices = [(pick, example.targets[pick])]
            samples = [(sample_key(example.example_id, index), lambda caption=caption: encoder.caption(caption, meta=meta))
                       for index, caption in choices]
        elif example.task == "vqa":
            samples = [(sample_key(example.example_id), lambda: encoder.vqa(example.prompt, example.targets[0], meta=meta))]
        elif example.task == "point":
            points = [tuple(p) for p in example.points.tolist()]
            samples = [(sample_key(example.example_id), lambda: encoder.point(example.prompt, points, meta=meta))]
        else:
            boxes = [tuple(b) for b in example.boxes.tolist()]
            samples = [(sample_key(example.example_id),
                        lambda: encoder.detect(example.prompt, boxes, example.labels, meta=meta))]
        write_samples(split, [(key, build, lambda: {"base_0": example.image}) for key, build in samples])
