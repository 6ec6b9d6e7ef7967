"""Pass 1 of a build (robot sources, no image decoding): per-source statistics and a deterministic
bottom-k sample of raw action chunks (each chunk ranked by a hash of source, episode and step, so the
sample does not depend on how units were split or in which order they finished); then the action
tokenizer: FAST fitted on the normalized sample, loaded, or naive bins. ``kidata fast fit --recipe``
runs this pass alone."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from kidata.hashing import holdout_rank, stable_fraction
from kidata.manifest import BuildDir
from kidata.normalize import NormStats, normalize
from kidata.pipelines.recipe import Recipe
from kidata.pipelines.stats import EpisodeStats, failed_units
from kidata.pipelines.storage import write_text
from kidata.recipe import ActionBins, FastFit, FastFrom
from kidata.sources.base import ReadReport, WorkUnit
from kidata.tokenizers import action_tokenizer_files

STATE_DIR = "_state"


class BuildError(RuntimeError):
    """A build that cannot go on; the message says what to fix (completed units are kept)."""


def stats_unit(recipe: Recipe, source_name: str, unit: WorkUnit) -> tuple[EpisodeStats, ReadReport, list]:
    """Statistics and the bottom-k (by hash) raw action chunks of one unit.

    With ``mapping.delta`` the action statistics and the chunks are those of the relative actions
    the model learns: every valid position of every step's chunk, minus that step's state on the
    masked dimensions (openpi computes its statistics after ``DeltaActions`` the same way)."""
    source_config = recipe.source(source_name)
    source = recipe.open(source_config)
    horizon, keep = recipe.mixture.action_horizon, recipe.mixture.reservoir_size
    delta_mask = source_config.delta_mask
    stats, report, reservoir = EpisodeStats(), ReadReport(), []
    for episode in source.read(unit, images=False, report=report):
        stats.add_episode(episode.state, episode.actions, delta_mask=delta_mask, horizon=horizon,
                          where=f"source {source_name!r}")
        stats.rank_for_holdout(holdout_rank(source_name, episode.episode_id), episode.episode_id)
        for step in range(episode.steps):
            rank = stable_fraction(recipe.mixture.seed, source_name, episode.episode_id, step)
            reservoir.append((rank, episode.action_chunk(step, horizon, delta_mask=delta_mask)[0]))
        if len(reservoir) > 2 * keep:
            reservoir = sorted(reservoir, key=lambda item: item[0])[:keep]
    return stats, report, sorted(reservoir, key=lambda item: item[0])[:keep]


def collect_pass1(recipe, robot, units, *, engine="local", workers=1, progress=True, ray_address=None,
                  times=None) -> dict:
    """Pass 1 over robot sources: {name: (EpisodeStats, ReadReport, bottom-k reservoir)}."""
    from kidata.pipelines.engine import run_jobs

    jobs = [((recipe, s.name, unit), f"{s.name}:{i}") for s in robot for i, unit in enumerate(units[s.name])]
    results, failures = run_jobs(stats_unit, jobs, engine=engine, workers=workers, progress=progress,
                                 label="stats", ray_address=ray_address, times=times)
    if failures:
        raise BuildError("statistics units failed: " + failed_units(failures))
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


def run_pass1(recipe, robot, units, fs, root, engine, workers, progress, ray_address, times):
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
                   "quarantined": report.quarantined.as_dict(), "first_for_holdout": stats.first_for_holdout}
        write_text(fs, f"{root}/{STATE_DIR}/stats/{source}.json", json.dumps(payload, sort_keys=True))
    norm_stats, reports, counts = {}, {}, {}
    for source in robot:
        payload = json.loads(fs.cat_file(f"{root}/{STATE_DIR}/stats/{source.name}.json").decode())
        norm_stats[source.name] = payload["norm_stats"]
        reports[source.name] = payload["quarantined"]
        counts[source.name] = payload["episodes"]
    return norm_stats, reports, counts


def held_out_when_none_falls(recipe: Recipe, robot, fs, root) -> dict[str, str]:
    """{source: episode id} for each robot source with a holdout fraction above 0 under which none of
    its episodes fell (25 episodes at 0.05 hold out none about a quarter of the time): its episode the
    holdout hash ranks first is held out instead, so a run on the build has a held-out split. Sources
    with an episode under the fraction are absent: their split is the hash's alone."""
    chosen = {}
    for source in robot:
        fraction = source.holdout if source.holdout is not None else recipe.mixture.holdout
        payload = json.loads(fs.cat_file(f"{root}/{STATE_DIR}/stats/{source.name}.json").decode())
        first = payload.get("first_for_holdout")
        if fraction > 0 and first is not None and first[0] >= fraction and payload["episodes"] > 1:
            chosen[source.name] = first[1]
    return chosen


def normalized_reservoir(recipe, robot, norm_stats, action_dim, fs, root) -> np.ndarray:
    reservoirs = {}
    for source in robot:
        with fs.open(f"{root}/{STATE_DIR}/stats/{source.name}-reservoir.npy", "rb") as handle:
            reservoirs[source.name] = np.load(handle, allow_pickle=False)
    return normalized_chunks(recipe, reservoirs, norm_stats, action_dim)


def recipe_chunks(recipe: Recipe, *, sources: list[str] | None = None, engine: str = "local", workers: int = 1,
                  progress: bool = True) -> tuple[np.ndarray, dict]:
    """Pass 1 alone over the chosen robot sources: the normalized action chunks a build fits FAST on
    (float64 [N, action_horizon, action_dim], the hash-ranked sample of ``reservoir_size`` per
    source) and the statistics they were normalized with ({source: NormStats JSON})."""
    robot = [s for s in recipe.sources if s.kind == "robot" and (not sources or s.name in sources)]
    if not robot:
        raise BuildError(f"no robot source selected (robot sources: {[s.name for s in recipe.sources if s.kind == 'robot']})")
    units = {s.name: recipe.open(s).list_units(recipe.mixture.units_per_source) for s in robot}
    merged = collect_pass1(recipe, robot, units, engine=engine, workers=workers, progress=progress)
    norm_stats = {name: stats.finalize().to_json() for name, (stats, _, _) in merged.items()}
    action_dim = recipe.mixture.action_dim or max(len(s["actions"]["mean"]) for s in norm_stats.values())
    reservoirs = {name: np.stack([c for _, c in reservoir]) for name, (_, _, reservoir) in merged.items()}
    return normalized_chunks(recipe, reservoirs, norm_stats, action_dim), norm_stats


def fit_fast_from_recipe(recipe: Recipe, out_dir: str | Path, *, sources: list[str] | None = None,
                         engine: str = "local", workers: int = 1, progress: bool = True):
    """``kidata fast fit --recipe``: pass 1 alone, then FAST fitted on the normalized chunks of the
    chosen robot sources; writes the tokenizer, its report and the statistics (stats.json)."""
    from kidata.tokenizers.fast import FastTokenizer
    from kidata.tokenizers.report import measure_tokenizer, write_report

    chunks, norm_stats = recipe_chunks(recipe, sources=sources, engine=engine, workers=workers, progress=progress)
    setting = recipe.mixture.fast_tokenizer
    options = setting.fit_options() if isinstance(setting, FastFit) else {}
    tokenizer = FastTokenizer.fit(chunks, show_progress=progress, **options)
    out = tokenizer.save(out_dir)
    report = measure_tokenizer(tokenizer, chunks, progress=progress)
    write_report(report, out / "report")
    (out / "stats.json").write_text(json.dumps({"normalization": recipe.mixture.normalization,
                                                "sources": norm_stats}, indent=2, sort_keys=True) + "\n")
    return tokenizer, report



def check_fit_has_robot_data(recipe: Recipe, fast_override: str | None = None) -> None:
    """A FAST fit (the default ``fast_tokenizer``) needs robot actions: refused before the build writes anything."""
    setting = fast_override or recipe.mixture.fast_tokenizer
    if isinstance(setting, FastFit) and not any(source.kind == "robot" for source in recipe.sources):
        raise BuildError("[mixture] fast_tokenizer fits FAST on the robot sources' actions and this recipe has none: "
                         "add a robot source, or for a mixture of VLM sources alone set fast_tokenizer = { bins = 256 } "
                         "or the path of a fitted tokenizer")


def action_tokenizer(recipe, robot, units, norm_stats, action_dim, fs, root, engine, workers, progress, ray_address,
                    fast_override) -> dict[str, str]:
    """Action tokenizer files (name -> text): FAST fitted on the normalized reservoir or loaded
    from a path, or naive bins (``{bins = 256, stride = 5}``: the paper's ablation)."""
    from kidata.tokenizers import BinTokenizer, load_action_tokenizer
    from kidata.tokenizers.fast import FastTokenizer
    from kidata.tokenizers.report import measure_tokenizer, write_report

    directory = BuildDir.at(root).action_tokenizer_path
    setting = fast_override or recipe.mixture.fast_tokenizer
    if not (fs.exists(f"{directory}/tokenizer.json") or fs.exists(f"{directory}/kidata_bins.json")):
        if isinstance(setting, (str, FastFrom)):  # a folder or a hub repo id: "org/name"
            tokenizer = load_action_tokenizer(setting if isinstance(setting, str) else setting.path, base=recipe.base_dir)
            chunks = None
        elif isinstance(setting, ActionBins):
            tokenizer = BinTokenizer(n_bins=setting.bins, stride=1 if setting.stride is None else setting.stride)
            chunks = None
        else:
            check_fit_has_robot_data(recipe, fast_override)
            chunks = normalized_reservoir(recipe, robot, norm_stats, action_dim, fs, root)
            tokenizer = FastTokenizer.fit(chunks, **setting.fit_options())
        with tempfile.TemporaryDirectory() as local:
            tokenizer.save(local)
            if chunks is not None:
                write_report(measure_tokenizer(tokenizer, chunks), Path(local) / "report")
            for path in sorted(Path(local).rglob("*")):
                if path.is_file():
                    target = f"{directory}/{path.relative_to(local).as_posix()}"
                    fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                    fs.put_file(str(path), target + ".tmp")
                    fs.mv(target + ".tmp", target)
    return action_tokenizer_files(fs, directory)
