"""``kidata build RECIPE --out OUT``: recipe -> statistics -> action tokenizer -> samples -> shards
+ manifest. This module orchestrates; the passes live in ``stats_pass`` (pass 1 and the action
tokenizer) and ``encode_pass`` (pass 2), the output's layout in ``kidata.manifest``.

The output is claimed (``_state/recipe.json``) only after every source opened; a build of another
recipe in OUT is refused unless ``force``. Completed units are kept: a killed build, run again,
resumes, and a unit whose shards went missing or were truncated is rewritten (units are
deterministic, so the rewrite repeats the lost bytes). The manifest is written last, and never
when a source produced no samples.
"""

from __future__ import annotations

import json
import sys
import time

from kidata import __version__
from kidata import recipe as recorded
from kidata.manifest import (
    ACTION_TOKENIZER_DIR,
    MANIFEST_FILE,
    BuildDir,
    Encoding,
    Manifest,
    ShardInfo,
    SourceEntry,
    TokenizerRef,
)
from kidata.normalize import NormStats
from kidata.pipelines.encode_pass import EncodeContext, context_encoder, encode_unit, warm_up_build, warm_up_worker
from kidata.pipelines.ownership import BUILD_ID_FILE, LOCK_NAME, BuildLock, build_id, foreign_paths, remove_build
from kidata.pipelines.recipe import Recipe
from kidata.pipelines.stats_pass import (
    STATE_DIR,
    BuildError,
    action_tokenizer,
    check_fit_has_robot_data,
    held_out_when_none_falls,
    run_pass1,
)
from kidata.pipelines.storage import output_fs, write_text
from kidata.stats_formats import FILE_NAMES, render

# the statistics of each robot source in openpi's and LeRobot's files: <out>/norm_stats/<source>/
NORM_STATS_DIR = "norm_stats"

# each local worker is a process holding its readers' libraries (~0.5 GB with TensorFlow)
MAX_WORKERS = 256

__all__ = ["BuildError", "build"]


def build(recipe: Recipe, out: str, *, engine: str = "local", workers: int = 1, force: bool = False,
          progress: bool = True, ray_address: str | None = None, fast_override: str | None = None) -> Manifest:
    """Runs (or resumes) a build and returns the manifest."""
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise BuildError(f"--workers {workers!r}: a build runs 1 to {MAX_WORKERS} worker processes")
    from kidata.pipelines.engine import shared_pool

    local = engine == "local"
    warm_up = None if not local else warm_up_worker if workers > 1 else warm_up_build
    with shared_pool(workers if local else 1, warm_up, (recipe,)):
        return _build(recipe, out, engine=engine, workers=workers, force=force, progress=progress,
                      ray_address=ray_address, fast_override=fast_override)


def _build(recipe: Recipe, out: str, *, engine: str, workers: int, force: bool, progress: bool,
           ray_address: str | None, fast_override: str | None) -> Manifest:
    fs, root = output_fs(out)
    started = time.perf_counter()
    check_fit_has_robot_data(recipe, fast_override)
    # sources are opened before the output is claimed: a wrong path never locks the folder
    units = {s.name: recipe.open(s).list_units(recipe.mixture.units_per_source) for s in recipe.sources}
    with BuildLock(fs, root, out):
        _claim(recipe, fs, root, out, force)
        return _build_locked(recipe, out, fs, root, units, started, engine=engine, workers=workers, progress=progress,
                             ray_address=ray_address, fast_override=fast_override)


def _claim(recipe: Recipe, fs, root: str, out: str, force: bool) -> None:
    """Records this recipe as the output's (``_state/recipe.json``). A build of another recipe
    there is refused, or with ``force`` removed: only the files a build wrote, never the user's."""
    state_file = f"{root}/{STATE_DIR}/recipe.json"
    if fs.exists(state_file):
        previous = _claimed(fs, state_file, out, force)
        if previous.get("recipe_sha256") != recipe.sha256:
            owned, foreign = foreign_paths(fs, root, _source_names(previous) + [s.name for s in recipe.sources])
            written = [p for p in owned if p not in (LOCK_NAME, STATE_DIR)]
            # what only a build that got somewhere leaves: its manifest or shards of completed units; a build
            # that failed before (a recipe mistake refused after pass 1) is replaced by the fixed recipe as is
            products = [p for p in written if p == MANIFEST_FILE or "/" in p]
            if products and not force:
                raise BuildError(f"{out} holds a build of a different recipe (sha256 {previous['recipe_sha256'][:12]}, "
                                 f"this one {recipe.sha256[:12]}; {len(products)} of its files, e.g. {products[0]}); "
                                 "use --force to replace it")
            if written or force:
                remove_build(fs, root, out, _source_names(previous) + [s.name for s in recipe.sources])
            else:
                fs.rm(f"{root}/{STATE_DIR}", recursive=True)
    try:
        write_text(fs, state_file, json.dumps({"recipe_sha256": recipe.sha256, "recipe": recipe.canonical()},
                                              sort_keys=True))
    except OSError as error:  # read-only, a file in the way, no permission: before any work is done
        raise BuildError(f"{out}: cannot write the build there ({type(error).__name__}: {error.strerror or error}); "
                         "choose a writable --out") from error


def _claimed(fs, state_file: str, out: str, force: bool) -> dict:
    """What ``_state/recipe.json`` records; one that is unreadable (edited, or not a build's) claims OUT for no
    recipe: ``force`` replaces that build, else the refusal names the file."""
    try:
        previous = json.loads(fs.cat_file(state_file).decode())
    except (ValueError, UnicodeDecodeError) as error:
        previous = error
    if isinstance(previous, dict) and isinstance(previous.get("recipe_sha256"), str):
        return previous
    if force:
        return {}
    raise BuildError(f"{state_file} does not record a recipe (it holds no 'recipe_sha256'), so the build in {out} "
                     "cannot be resumed: use --force to replace it")


def _source_names(state: dict) -> list[str]:
    sources = state.get("recipe", {}).get("sources", []) if isinstance(state.get("recipe"), dict) else []
    return [s["name"] for s in sources if isinstance(s, dict) and isinstance(s.get("name"), str)]


def _build_locked(recipe: Recipe, out: str, fs, root: str, units: dict, started: float, *, engine: str, workers: int,
                  progress: bool, ray_address: str | None, fast_override: str | None) -> Manifest:
    from kidata.pipelines.engine import JobTimes, peak_rss_mib, run_jobs

    robot = [s for s in recipe.sources if s.kind == "robot"]

    # pass 1 -----------------------------------------------------------------------------
    pass1_times, pass2_times = JobTimes(), JobTimes()
    norm_stats, pass1_reports, episodes = run_pass1(recipe, robot, units, fs, root, engine, workers, progress, ray_address,
                                                 pass1_times)
    action_dim = recipe.mixture.action_dim or max((len(norm_stats[s.name]["actions"]["mean"]) for s in robot), default=1)
    fast_started = time.perf_counter()
    fast_files = action_tokenizer(recipe, robot, units, norm_stats, action_dim, fs, root, engine, workers, progress,
                                 ray_address, fast_override)
    fast_seconds = time.perf_counter() - fast_started

    # pass 2 -----------------------------------------------------------------------------
    identity = build_id(recipe.sha256, fast_files)
    write_text(fs, f"{BuildDir.at(root).action_tokenizer_path}/{BUILD_ID_FILE}", json.dumps({"build_id": identity}) + "\n")
    held_out = held_out_when_none_falls(recipe, robot, fs, root)
    for source, episode in held_out.items():
        print(f"build: no episode of source {source!r} fell under its holdout fraction; holding out {episode} "
              "(the one the holdout hash ranks first) so that runs on this build have a held-out split", file=sys.stderr)
    context = EncodeContext(recipe, out, fast_files, norm_stats, action_dim, identity, held_out)
    context_encoder(context)  # token-range collisions and tokenizer problems surface here, before any unit runs
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
    build_dir = BuildDir.at(root)
    report_path = build_dir.report_path
    if jobs or pass1_times.jobs or not (fs.exists(report_path) and fs.exists(build_dir.manifest_path)):
        report = _report(manifest, time.perf_counter() - started, pass1_reports)
        report["cost"] = {"pass1": pass1_times.as_dict(), "fast_seconds": round(fast_seconds, 3),
                          "pass2": pass2_times.as_dict(), "coordinator_peak_rss_mib": round(peak_rss_mib(), 1)}
        write_text(fs, report_path, json.dumps(report, indent=2, sort_keys=True) + "\n")
    elif progress:  # a finished build run again: its report keeps the figures of the build that did the work
        print(f"build: {out} is already built from this recipe; nothing to do", file=sys.stderr)
    empty = [s for s in manifest.sources if not s.samples]
    if empty:  # no manifest: training must not start on a mixture that silently lost a source
        raise BuildError("; ".join(f"source {s.name!r} produced no samples (rejected {dict(s.rejected)}, "
                                   f"quarantined {dict(s.quarantined)}, skipped {dict(s.skipped)})" for s in empty)
                         + f"; no manifest written (details: {report_path}). Fix the recipe "
                           "(e.g. max_tokens) and build again with --force")
    for source, stats in norm_stats.items():  # where openpi and LeRobot look for them
        for format in ("openpi", "lerobot"):
            write_text(fs, f"{root}/{NORM_STATS_DIR}/{source}/{FILE_NAMES[format]}", render(NormStats.from_json(stats), format))
    write_text(fs, build_dir.manifest_path, manifest.dumps())
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


def _manifest(recipe, context, fs, root, units, norm_stats) -> Manifest:
    from kidata.tokenizers import action_tokenizer_kind

    encoder = context_encoder(context)  # cached: its tokenizers are the ones the units used
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
        sources.append(SourceEntry(
            name=source.name, kind=source.kind, weight=source.weight, reader=source.reader,
            episodes=sum(r["episodes"] for r in records), samples=sum(r["samples"] for r in records),
            quarantined=dict(sorted(quarantined.items())), rejected=dict(sorted(rejected.items())),
            skipped=dict(sorted(notices.items())),
            shards=tuple(ShardInfo(**shard) for record in records for shard in record["shards"]),
            norm_stats=norm_stats[source.name] if source.kind == "robot" else None, delta_mask=source.delta_mask))
    mixture = recipe.mixture
    ranges = {key: tuple(value) for key, value in encoder.ranges.items()}
    return Manifest(
        kidata_version=__version__, recipe=recorded.Recipe.from_canonical(recipe.canonical()),
        recipe_sha256=recipe.sha256, build_id=context.build_id,
        text_tokenizer=TokenizerRef(mixture.text_tokenizer, text.sha256),
        action_tokenizer=TokenizerRef(ACTION_TOKENIZER_DIR, encoder.actions.sha256, action_tokenizer_kind(encoder.actions)),
        encoding=Encoding(state_encoding=mixture.state_encoding, prompt_format=mixture.prompt_format,
                          action_horizon=mixture.action_horizon, action_dim=context.action_dim,
                          image_size=mixture.image_size, max_tokens=mixture.max_tokens,
                          normalization=mixture.normalization, fast_token_rule=mixture.fast_token_rule,
                          text_vocab_size=text.vocab_size, **ranges),
        sources=tuple(sources))


def _report(manifest: Manifest, seconds: float, pass1_quarantine: dict) -> dict:
    sources = []
    for source in manifest.sources:
        sizes = [shard.bytes for shard in source.shards]
        sources.append({"name": source.name, "episodes": source.episodes, "samples": source.samples,
                        "quarantined": dict(source.quarantined), "rejected": dict(source.rejected),
                        "skipped": dict(source.skipped),
                        "shards": len(sizes), "shard_bytes": {"total": sum(sizes), "max": max(sizes, default=0)}})
    samples = sum(s["samples"] for s in sources)
    return {"seconds": round(seconds, 3), "samples": samples, "samples_per_second": round(samples / max(seconds, 1e-9), 1),
            "sources": sources}


def summary(manifest: Manifest, out: str) -> str:
    """What ``kidata build`` prints: per source its episodes, samples, shards and what was
    quarantined, rejected or skipped; then throughput and cost from the build report."""
    lines = []
    for source in manifest.sources:
        noun = "episodes" if source.kind == "robot" else "examples"
        lines.append(f"{source.name:>24}: {source.episodes} {noun}, {source.samples} samples, {len(source.shards)} "
                     f"shards, quarantined {dict(source.quarantined)}, rejected {dict(source.rejected)}"
                     + (f", notices {dict(source.skipped)}" if source.skipped else ""))  # counted, built or not
    fs, root = output_fs(out)
    report = json.loads(fs.cat_file(BuildDir.at(root).report_path).decode())
    if report:
        cost = report["cost"]
        lines.append(f"{report['samples']} samples in {report['seconds']:.1f} s ({report['samples_per_second']:.0f} "
                     "samples/s)")
        lines.append(f"pass 1 {cost['pass1']['wall_seconds']:.1f} s, FAST {cost['fast_seconds']:.1f} s, pass 2 "
                     f"{cost['pass2']['wall_seconds']:.1f} s ({cost['pass2']['job_seconds']:.1f} s inside units); "
                     f"peak RSS {cost['coordinator_peak_rss_mib']:.0f} MiB here, "
                     f"{cost['pass2']['worker_peak_rss_mib']:.0f} MiB per worker")
    lines.append(f"manifest: {BuildDir.at(out).manifest_path}; report: {BuildDir.at(out).report_path}")
    return "\n".join(lines)

