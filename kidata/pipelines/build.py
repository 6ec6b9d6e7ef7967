"""``kidata build RECIPE --out OUT``: recipe -> statistics -> FAST -> samples -> shards + manifest.

Pass 1 (robot sources, no image decoding): per-source statistics and a deterministic bottom-k
sample of raw action chunks (each chunk ranked by a hash of source, episode and step, so the
sample does not depend on how units were split or in which order they finished); FAST is fitted
on the normalized sample, or loaded. Pass 2: every unit of every source becomes samples written
into its own shards; a unit's record is written only after its shards are in place, so a killed
build resumes by skipping recorded units. The manifest is written last. Work units are fixed by
the recipe (``units_per_source``), not by the number of workers, so any engine and worker count
gives byte-identical shards.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from kidata import __version__
from kidata.hashing import json_sha256, stable_fraction
from kidata.pipelines.recipe import Recipe, SourceConfig, parse_recipe
from kidata.pipelines.shards import ShardWriter, jpeg_bytes, sample_key, sample_members
from kidata.pipelines.stats import EpisodeStats, NormStats, normalize
from kidata.schema import Sample
from kidata.sources.base import ReadReport, WorkUnit

STATE_DIR = "_state"
FAST_DIR = "fast_tokenizer"
# Robot samples are encoded in blocks of this many steps: the block's prompts and tokens are built,
# then all its frames decoded and JPEG-encoded, then its samples written, each in a tight loop.
# Alternating them step by step kept evicting each other's code and data from the caches: the
# non-image work of a unit took ~2.0-2.5 s per 3200 steps that way and ~1.4-1.5 s in blocks (same
# bytes; benchmarks/RESULTS.md). A block holds its decoded frames: 32 steps x 3 cameras of 224x224
# is ~14 MB.
ENCODE_BLOCK_STEPS = 32


class BuildError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------- helpers
def in_holdout(source: str, record_id: str, fraction: float) -> bool:
    """Held-out by a hash of the source and record id only: the split never moves between builds."""
    return fraction > 0 and stable_fraction("holdout", source, record_id) < fraction


def open_source(recipe: Recipe, source: SourceConfig):
    """The reader of one recipe source, opened from the source's options (kidata.sources.registry)."""
    from kidata.sources.registry import open_reader

    return open_reader(source.reader, source.options, name=source.name, image_size=recipe.mixture.image_size,
                       seed=recipe.mixture.seed)


def output_fs(out: str):
    import fsspec

    fs, root = fsspec.core.url_to_fs(out)
    return fs, root.rstrip("/")


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

    import kidata.sources.images  # noqa: F401
    import kidata.tokenizers.fast  # noqa: F401
    import kidata.tokenizers.prompt  # noqa: F401
    import kidata.tokenizers.text  # noqa: F401

    for source in recipe.sources:
        warm_up = getattr(open_source(recipe, source), "warm_up", None)
        if warm_up is not None:
            warm_up()


def write_text(fs, path: str, text: str) -> None:
    """Atomic small-file write: temporary name, then rename."""
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path + ".tmp", "w") as handle:
        handle.write(text)
    fs.mv(path + ".tmp", path)


# ---------------------------------------------------------------------------------- pass 1
def stats_unit(recipe: Recipe, source_name: str, unit: WorkUnit) -> tuple[EpisodeStats, ReadReport, list]:
    """Statistics and the bottom-k (by hash) raw action chunks of one unit."""
    source_config = recipe.source(source_name)
    source = open_source(recipe, source_config)
    horizon, keep = recipe.mixture.action_horizon, recipe.mixture.reservoir_size
    stats, report, reservoir = EpisodeStats(), ReadReport(), []
    for episode in source.read(unit, images=False, report=report):
        stats.add(episode.state, episode.actions)
        for step in range(episode.steps):
            rank = stable_fraction(recipe.mixture.seed, source_name, episode.episode_id, step)
            reservoir.append((rank, episode.action_chunk(step, horizon)[0]))
        if len(reservoir) > 2 * keep:
            reservoir = sorted(reservoir, key=lambda item: item[0])[:keep]
    return stats, report, sorted(reservoir, key=lambda item: item[0])[:keep]


# ---------------------------------------------------------------------------------- pass 2
@dataclass(frozen=True)
class EncodeContext:
    """Everything a worker needs to encode units; picklable, independent of the engine."""

    recipe: Recipe
    out: str
    fast_files: dict[str, str]
    norm_stats: dict[str, dict]
    action_dim: int


_WORKER_CACHE: dict[str, Any] = {}


def materialize(files: dict[str, str]) -> Path:
    """Writes tokenizer files (name -> text) into a fresh local folder: workers and remote
    outputs get the FAST tokenizer by value, not by a path they may not see."""
    directory = Path(tempfile.mkdtemp(prefix="kidata-fast-"))
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def _encoder(context: EncodeContext):
    from kidata.tokenizers import load_action_tokenizer
    from kidata.tokenizers.prompt import SampleEncoder
    from kidata.tokenizers.ranges import ActionIdMap
    from kidata.tokenizers.text import TextTokenizer

    key = json_sha256(context.fast_files) + context.recipe.sha256
    if _WORKER_CACHE.get("key") != key:
        mixture = context.recipe.mixture
        fast = load_action_tokenizer(materialize(context.fast_files))
        text = TextTokenizer.load(context.recipe.resolve_asset(mixture.text_tokenizer))
        id_map = ActionIdMap(text.vocab_size, fast.vocab_size, rule=mixture.fast_token_rule,
                             skip=mixture.fast_token_skip, offset=mixture.fast_token_offset)
        uses_loc = any(s.uses_loc_tokens for s in context.recipe.sources)
        encoder = SampleEncoder(text, fast, prompt_format=mixture.prompt_format, state_encoding=mixture.state_encoding,
                                max_tokens=mixture.max_tokens, id_map=id_map,
                                special_state_first=mixture.special_state_first, uses_loc_tokens=uses_loc)
        _WORKER_CACHE.update(key=key, encoder=encoder)
    return _WORKER_CACHE["encoder"]


def sample_encoder(manifest: dict, action_tokenizer_dir: str):
    """The SampleEncoder a build used, rebuilt from its manifest and action tokenizer files
    (for inspection, evaluation and inference)."""
    fs, root = output_fs(action_tokenizer_dir)
    recipe = parse_recipe(manifest["recipe"], base_dir=".")
    context = EncodeContext(recipe, action_tokenizer_dir, action_tokenizer_files(fs, root), {},
                            manifest["encoding"]["action_dim"])
    return _encoder(context)


def encode_unit(context: EncodeContext, source_name: str, unit: WorkUnit, unit_index: int) -> dict:
    """Writes one unit's shards, then its completion record; returns the record. Counts
    ``image_seconds``: decoding and resizing robot frames and encoding every output JPEG (VLM
    readers decode their images themselves), the build's share of the benchmark's floor."""
    from kidata.pipelines.engine import counted_seconds
    from kidata.tokenizers.prompt import SampleRejected

    recipe, mixture = context.recipe, context.recipe.mixture
    source_config = recipe.source(source_name)
    source = open_source(recipe, source_config)
    from kidata.tokenizers.prompt import EncodingStats

    encoder = _encoder(context)
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
            writers[split].write(key, sample_members(sample, images))
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
    from kidata.sources.images import resize_with_pad

    mixture = context.recipe.mixture
    stats = NormStats.from_json(context.norm_stats[source_name])
    horizon = mixture.action_horizon
    for episode in source.read(unit, images=True, report=report):
        counts["episodes"] += 1
        split = "val" if in_holdout(source_name, episode.episode_id, holdout) else "train"
        state = normalize(episode.state, stats.state, mixture.normalization).astype(np.float32)
        actions = normalize(episode.actions, stats.actions, mixture.normalization).astype(np.float32)
        steps = range(0, episode.steps, mixture.step_stride)
        index = np.minimum(np.arange(horizon)[None, :] + np.asarray(steps)[:, None], episode.steps - 1)  # [N, H]
        chunks = np.zeros((len(steps), horizon, context.action_dim), dtype=np.float32)
        chunks[:, :, : actions.shape[1]] = actions[index]
        action_ids = encoder.action_ids_batch(chunks)
        block = []
        for row, step in enumerate(steps):
            chunk, ids = chunks[row], action_ids[row]
            valid = np.arange(step, step + horizon) < episode.steps
            choice = int(stable_fraction(mixture.seed, "instruction", episode.episode_id, step)
                         * max(1, len(episode.instructions)))
            instruction = episode.instructions[choice] if episode.instructions else ""
            meta = {"source": source_name, "episode": episode.episode_id, "step": step,
                    "action_dim": int(actions.shape[1])}

            def build(step=step, chunk=chunk, valid=valid, instruction=instruction, meta=meta, ids=ids):
                sample = encoder.robot(instruction, state[step], chunk, valid, subtask=episode.annotation_at(step),
                                       meta=meta, action_ids=ids)
                sample.actions = chunk[:, : actions.shape[1]]  # stored at the source's own dimension
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


# ---------------------------------------------------------------------------------- the build
def build(recipe: Recipe, out: str, *, engine: str = "local", workers: int = 1, force: bool = False,
          progress: bool = True, ray_address: str | None = None, fast_override: str | None = None) -> dict:
    """Runs (or resumes) a build and returns the manifest."""
    from kidata.pipelines.engine import shared_pool

    local = engine == "local"
    warm_up = None if not local else warm_up_worker if workers > 1 else warm_up_build
    with shared_pool(workers if local else 1, warm_up, (recipe,)):
        return _build(recipe, out, engine=engine, workers=workers, force=force, progress=progress,
                      ray_address=ray_address, fast_override=fast_override)


def _build(recipe: Recipe, out: str, *, engine: str, workers: int, force: bool, progress: bool,
           ray_address: str | None, fast_override: str | None) -> dict:
    from kidata.pipelines.engine import JobTimes, peak_rss_mib, run_jobs

    fs, root = output_fs(out)
    state_file = f"{root}/{STATE_DIR}/recipe.json"
    started = time.perf_counter()
    # sources are opened before the output is claimed: a wrong path never locks the folder
    units = {s.name: open_source(recipe, s).list_units(recipe.mixture.units_per_source) for s in recipe.sources}
    if fs.exists(state_file):
        previous = json.loads(fs.cat_file(state_file).decode())
        if previous["recipe_sha256"] != recipe.sha256:
            written = [p for p in fs.find(root) if not p.endswith(f"{STATE_DIR}/recipe.json")]
            if written and not force:
                raise BuildError(f"{out} holds a build of a different recipe (sha256 {previous['recipe_sha256'][:12]}, "
                                 f"this one {recipe.sha256[:12]}); use --force to replace it")
            fs.rm(root, recursive=True)  # --force, or a build that failed before writing anything
    write_text(fs, state_file, json.dumps({"recipe_sha256": recipe.sha256, "recipe": recipe.canonical()}, sort_keys=True))
    robot = [s for s in recipe.sources if s.kind == "robot"]

    # pass 1 -----------------------------------------------------------------------------
    pass1_times, pass2_times = JobTimes(), JobTimes()
    norm_stats, pass1_reports, episodes = _pass1(recipe, robot, units, fs, root, engine, workers, progress, ray_address,
                                                 pass1_times)
    action_dim = recipe.mixture.action_dim or max((len(norm_stats[s.name]["actions"]["mean"]) for s in robot), default=1)
    fast_started = time.perf_counter()
    fast_files = _fast_tokenizer(recipe, robot, units, norm_stats, action_dim, fs, root, engine, workers, progress,
                                 ray_address, fast_override)
    fast_seconds = time.perf_counter() - fast_started

    # pass 2 -----------------------------------------------------------------------------
    context = EncodeContext(recipe, out, fast_files, norm_stats, action_dim)
    _encoder(context)  # token-range collisions and tokenizer problems surface here, before any unit runs
    jobs = []
    for source in recipe.sources:
        for index, unit in enumerate(units[source.name]):
            record_path = f"{root}/{STATE_DIR}/units/{source.name}-{index:04d}.json"
            if fs.exists(record_path):
                damaged = _damaged_shards(fs, root, json.loads(fs.cat_file(record_path).decode()))
                if not damaged:
                    continue
                print(f"build: rewriting unit {source.name}:{index}: {damaged}", file=sys.stderr)
                fs.rm(record_path)  # units are deterministic: the rewrite repeats the lost bytes
            jobs.append(((context, source.name, unit, index), f"{source.name}:{index}"))
    results, failures = run_jobs(encode_unit, jobs, engine=engine, workers=workers, progress=progress,
                                 label="encode", ray_address=ray_address, times=pass2_times)
    if failures:
        raise BuildError("units failed (completed units are kept; run the build again to resume): "
                         + "; ".join(f"{name}: {error}" for name, error in failures))
    manifest = _manifest(recipe, context, fs, root, units, norm_stats)
    report = _report(manifest, time.perf_counter() - started, pass1_reports)
    report["cost"] = {"pass1": pass1_times.as_dict(), "fast_seconds": round(fast_seconds, 3),
                      "pass2": pass2_times.as_dict(), "coordinator_peak_rss_mib": round(peak_rss_mib(), 1)}
    write_text(fs, f"{root}/build_report.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
    empty = [s for s in manifest["sources"] if not s["samples"]]
    if empty:  # no manifest: training must not start on a mixture that silently lost a source
        raise BuildError("; ".join(f"source {s['name']!r} produced no samples (rejected {s['rejected']}, "
                                   f"quarantined {s['quarantined']}, skipped {s['skipped']})" for s in empty)
                         + f"; no manifest written (details: {root}/build_report.json). Fix the recipe "
                           "(e.g. max_tokens) and build again with --force")
    write_text(fs, f"{root}/manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _damaged_shards(fs, root: str, record: dict) -> str:
    """Why a finished unit's shards cannot be used ('' when they can): a shard missing or of
    another size than written. (A flipped byte keeps the size: ``kidata verify`` checks hashes.)"""
    for shard in record["shards"]:
        path = f"{root}/{shard['path']}"
        if not fs.exists(path):
            return f"shard {shard['path']} is missing"
        if fs.size(path) != shard["bytes"]:
            return f"shard {shard['path']} has {fs.size(path)} bytes, {shard['bytes']} were written"
    return ""


def collect_pass1(recipe, robot, units, *, engine="local", workers=1, progress=True, ray_address=None,
                  times=None) -> dict:
    """Pass 1 over robot sources: {name: (EpisodeStats, ReadReport, bottom-k reservoir)}."""
    from kidata.pipelines.engine import run_jobs

    jobs = [((recipe, s.name, unit), f"{s.name}:{i}") for s in robot for i, unit in enumerate(units[s.name])]
    results, failures = run_jobs(stats_unit, jobs, engine=engine, workers=workers, progress=progress,
                                 label="stats", ray_address=ray_address, times=times)
    if failures:
        raise BuildError("statistics units failed: " + "; ".join(f"{n}: {e}" for n, e in failures))
    merged: dict[str, tuple[EpisodeStats, ReadReport, list]] = {s.name: (EpisodeStats(), ReadReport(), []) for s in robot}
    for (args, _), (stats, report, reservoir) in zip(jobs, results):
        total = merged[args[1]]
        total[0].merge(stats), total[1].merge(report), total[2].extend(reservoir)
    keep = recipe.mixture.reservoir_size
    for source, (stats, report, reservoir) in merged.items():
        if stats.episodes == 0:
            raise BuildError(f"source {source!r} yielded no usable episode (quarantined: {report.quarantined.as_dict()})")
        reservoir.sort(key=lambda item: item[0])
        del reservoir[keep:]
    return merged


def normalized_chunks(recipe, reservoirs: dict[str, np.ndarray], norm_stats: dict, action_dim: int) -> np.ndarray:
    """Raw reservoir chunks normalized with their source's statistics, zero-padded to action_dim."""
    parts = []
    for source, raw in reservoirs.items():
        stats = NormStats.from_json(norm_stats[source])
        padded = np.zeros((len(raw), recipe.mixture.action_horizon, action_dim))
        padded[:, :, : raw.shape[2]] = normalize(raw, stats.actions, recipe.mixture.normalization)
        parts.append(padded)
    return np.concatenate(parts)


def _pass1(recipe, robot, units, fs, root, engine, workers, progress, ray_address, times):
    todo = [s for s in robot if not fs.exists(f"{root}/{STATE_DIR}/stats/{s.name}.json")]
    merged = collect_pass1(recipe, todo, units, engine=engine, workers=workers, progress=progress,
                           ray_address=ray_address, times=times)
    fs.makedirs(f"{root}/{STATE_DIR}/stats", exist_ok=True)
    for source, (stats, report, reservoir) in merged.items():
        chunks = np.stack([chunk for _, chunk in reservoir]).astype(np.float32)
        temporary = f"{root}/{STATE_DIR}/stats/{source}-reservoir.npy.tmp"
        with fs.open(temporary, "wb") as handle:
            np.save(handle, chunks, allow_pickle=False)
        fs.mv(temporary, f"{root}/{STATE_DIR}/stats/{source}-reservoir.npy")
        payload = {"norm_stats": stats.finalize().to_json(), "episodes": stats.episodes,
                   "quarantined": report.quarantined.as_dict()}
        write_text(fs, f"{root}/{STATE_DIR}/stats/{source}.json", json.dumps(payload, sort_keys=True))
    norm_stats, reports, counts = {}, {}, {}
    for source in robot:
        payload = json.loads(fs.cat_file(f"{root}/{STATE_DIR}/stats/{source.name}.json").decode())
        norm_stats[source.name] = payload["norm_stats"]
        reports[source.name] = payload["quarantined"]
        counts[source.name] = payload["episodes"]
    return norm_stats, reports, counts


def _fast_tokenizer(recipe, robot, units, norm_stats, action_dim, fs, root, engine, workers, progress, ray_address,
                    fast_override) -> dict[str, str]:
    """Action tokenizer files (name -> text): FAST fitted on the normalized reservoir or loaded
    from a path, or naive bins (``{bins = 256, stride = 5}``: the paper's ablation)."""
    from kidata.tokenizers import BinTokenizer, load_action_tokenizer
    from kidata.tokenizers.fast import FastTokenizer
    from kidata.tokenizers.report import evaluate, write_report

    directory = f"{root}/{FAST_DIR}"
    setting = fast_override or recipe.mixture.fast_tokenizer
    if not (fs.exists(f"{directory}/tokenizer.json") or fs.exists(f"{directory}/kidata_bins.json")):
        if isinstance(setting, str):
            tokenizer = load_action_tokenizer(recipe.resolve_asset(setting))
            chunks = None
        elif "bins" in setting:
            tokenizer = BinTokenizer(n_bins=setting["bins"], stride=setting.get("stride", 1))
            chunks = None
        else:
            if not robot:
                raise BuildError("fast_tokenizer.fit needs at least one robot source")
            chunks = _normalized_reservoir(recipe, robot, norm_stats, action_dim, fs, root)
            options = {k: v for k, v in setting.items() if k != "fit"}
            tokenizer = FastTokenizer.fit(chunks, **options)
        with tempfile.TemporaryDirectory() as local:
            tokenizer.save(local)
            if chunks is not None:
                write_report(evaluate(tokenizer, chunks), Path(local) / "report")
            for path in sorted(Path(local).rglob("*")):
                if path.is_file():
                    target = f"{directory}/{path.relative_to(local).as_posix()}"
                    fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                    fs.put_file(str(path), target + ".tmp")
                    fs.mv(target + ".tmp", target)
    return action_tokenizer_files(fs, directory)


ACTION_TOKENIZER_FILES = ("processor_config.json", "tokenizer.json", "kidata_fast.json", "kidata_bins.json")


def action_tokenizer_files(fs, directory: str) -> dict[str, str]:
    """The files that define a build's action tokenizer (FAST or bins), name -> text."""
    return {name: fs.cat_file(f"{directory}/{name}").decode()
            for name in ACTION_TOKENIZER_FILES if fs.exists(f"{directory}/{name}")}


def _normalized_reservoir(recipe, robot, norm_stats, action_dim, fs, root) -> np.ndarray:
    reservoirs = {}
    for source in robot:
        with fs.open(f"{root}/{STATE_DIR}/stats/{source.name}-reservoir.npy", "rb") as handle:
            reservoirs[source.name] = np.load(handle, allow_pickle=False)
    return normalized_chunks(recipe, reservoirs, norm_stats, action_dim)


def fit_fast_from_recipe(recipe: Recipe, out_dir: str | Path, *, sources: list[str] | None = None,
                         engine: str = "local", workers: int = 1, progress: bool = True):
    """``kidata fast fit --recipe``: pass 1 alone, then FAST fitted on the normalized chunks of the
    chosen robot sources; writes the tokenizer, its report and the statistics (stats.json)."""
    from kidata.tokenizers.fast import FastTokenizer
    from kidata.tokenizers.report import evaluate, write_report

    robot = [s for s in recipe.sources if s.kind == "robot" and (not sources or s.name in sources)]
    if not robot:
        raise BuildError(f"no robot source selected (robot sources: {[s.name for s in recipe.sources if s.kind == 'robot']})")
    units = {s.name: open_source(recipe, s).list_units(recipe.mixture.units_per_source) for s in robot}
    merged = collect_pass1(recipe, robot, units, engine=engine, workers=workers, progress=progress)
    norm_stats = {name: stats.finalize().to_json() for name, (stats, _, _) in merged.items()}
    action_dim = recipe.mixture.action_dim or max(len(s["actions"]["mean"]) for s in norm_stats.values())
    reservoirs = {name: np.stack([c for _, c in reservoir]) for name, (_, _, reservoir) in merged.items()}
    chunks = normalized_chunks(recipe, reservoirs, norm_stats, action_dim)
    setting = recipe.mixture.fast_tokenizer if isinstance(recipe.mixture.fast_tokenizer, dict) else {}
    options = {k: v for k, v in setting.items() if k != "fit"}
    tokenizer = FastTokenizer.fit(chunks, show_progress=progress, **options)
    out = tokenizer.save(out_dir)
    report = evaluate(tokenizer, chunks, progress=progress)
    write_report(report, out / "report")
    (out / "stats.json").write_text(json.dumps({"normalization": recipe.mixture.normalization,
                                                "sources": norm_stats}, indent=2, sort_keys=True) + "\n")
    return tokenizer, report


def _manifest(recipe, context, fs, root, units, norm_stats) -> dict:
    from kidata.tokenizers import action_tokenizer_kind

    encoder = _encoder(context)  # cached: its tokenizers are the ones the units used
    text = encoder.text
    sources = []
    for source in recipe.sources:
        records = [json.loads(fs.cat_file(f"{root}/{STATE_DIR}/units/{source.name}-{i:04d}.json").decode())
                   for i in range(len(units[source.name]))]
        quarantined: dict[str, int] = {}
        rejected: dict[str, int] = {}
        notices: dict[str, int] = {}  # skipped on purpose or by skip_corrupt: failed units, filtered episodes
        for record in records:
            for reason, count in record["quarantined"].items():
                quarantined[reason] = quarantined.get(reason, 0) + count
            for reason, count in record["rejected"].items():
                rejected[reason] = rejected.get(reason, 0) + count
            for reason, count in record.get("notices", {}).items():
                notices[reason] = notices.get(reason, 0) + count
        entry = {
            "name": source.name, "kind": source.kind, "weight": source.weight, "reader": source.reader,
            "episodes": sum(r["episodes"] for r in records), "samples": sum(r["samples"] for r in records),
            "quarantined": dict(sorted(quarantined.items())), "rejected": dict(sorted(rejected.items())),
            "skipped": dict(sorted(notices.items())),
            "shards": [shard for record in records for shard in record["shards"]],
        }
        if source.kind == "robot":
            entry["norm_stats"] = norm_stats[source.name]
        sources.append(entry)
    mixture = recipe.mixture
    return {
        "kidata_version": __version__,
        "recipe": recipe.canonical(),
        "recipe_sha256": recipe.sha256,
        "tokenizers": {"text": {"path": mixture.text_tokenizer, "sha256": text.sha256},
                       "fast": {"path": FAST_DIR, "sha256": encoder.actions.sha256,
                                "kind": action_tokenizer_kind(encoder.actions)}},
        "encoding": {"state_encoding": mixture.state_encoding, "prompt_format": mixture.prompt_format,
                     "action_horizon": mixture.action_horizon, "action_dim": context.action_dim,
                     "image_size": mixture.image_size, "max_tokens": mixture.max_tokens,
                     "normalization": mixture.normalization, "fast_token_rule": mixture.fast_token_rule,
                     "text_vocab_size": text.vocab_size, **encoder.ranges},
        "sources": sources,
    }


def _report(manifest: dict, seconds: float, pass1_quarantine: dict) -> dict:
    sources = []
    for source in manifest["sources"]:
        sizes = [shard["bytes"] for shard in source["shards"]]
        sources.append({"name": source["name"], "episodes": source["episodes"], "samples": source["samples"],
                        "quarantined": source["quarantined"], "rejected": source["rejected"],
                        "skipped": source["skipped"],
                        "shards": len(sizes), "shard_bytes": {"total": sum(sizes), "max": max(sizes, default=0)}})
    samples = sum(s["samples"] for s in sources)
    return {"seconds": round(seconds, 3), "samples": samples, "samples_per_second": round(samples / max(seconds, 1e-9), 1),
            "sources": sources}
