"""``kidata inspect OUT``: a build's summary and a few decoded samples, with a PNG contact sheet of
their images and a plot of their action chunks."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from kidata.manifest import BuildDir, Manifest
from kidata.pipelines.encode_pass import EncodeContext, context_encoder
from kidata.pipelines.recipe import Recipe
from kidata.pipelines.shards import iter_shard, load_npy
from kidata.pipelines.storage import not_a_build_folder, output_fs
from kidata.schema import Sample
from kidata.tokenizers import action_tokenizer_files


def sample_from_members(members: dict[str, bytes]) -> Sample:
    meta = json.loads(members["meta.json"])
    tokens, ar, loss = (load_npy(members[f"{name}.npy"]) for name in ("tokens", "ar", "loss"))
    extra = {k: v for k, v in meta.items() if k not in ("kind", "prefix_length", "has_actions", "fast_span", "state_slot")}
    return Sample(
        kind=meta["kind"], tokens=tokens, ar=ar, loss=loss, prefix_length=meta["prefix_length"],
        has_actions=meta["has_actions"], fast_span=tuple(meta["fast_span"]) if meta["fast_span"] else None,
        state=load_npy(members["state.npy"]) if "state.npy" in members else None, state_slot=meta["state_slot"],
        actions=load_npy(members["actions.npy"]) if "actions.npy" in members else None,
        action_valid=load_npy(members["action_valid.npy"]) if "action_valid.npy" in members else None,
        images={k[:-4]: v for k, v in members.items() if k.endswith(".jpg")}, meta=extra,
    )


def inspect_build(out: str, *, samples: int = 3, save: str | None = None) -> str:
    """Summary text plus ``samples`` decoded samples per source; PNGs written into ``save``."""
    from kidata.tokenizers.inspect import describe_sample

    fs, root = output_fs(out)
    file = not_a_build_folder(fs, root, out)
    if file:
        raise NotADirectoryError(file)
    build = BuildDir.at(root)
    manifest, _ = Manifest.read(fs.unstrip_protocol(build.manifest_path))
    recipe = Recipe.of(manifest.recipe)  # the build's kind, to encode as the build did
    files = action_tokenizer_files(fs, build.action_tokenizer_path)
    encoder = context_encoder(EncodeContext(recipe, out, files, {}, manifest.encoding.action_dim))
    lines = [f"build {manifest.recipe.mixture.name!r} (kidata {manifest.kidata_version}, recipe "
             f"{manifest.recipe_sha256[:12]}); encoding: {json.dumps(manifest.encoding.to_json(), sort_keys=True)}"]
    shown: list[tuple[str, Sample]] = []
    for source in manifest.sources:
        sizes = [s.bytes for s in source.shards]
        splits = {split: sum(s.samples for s in source.shards if s.split == split) for split in ("train", "val")}
        lines.append(f"- {source.name} ({source.kind}, weight {source.weight}): {source.episodes} "
                     f"{'episodes' if source.kind == 'robot' else 'examples'}, samples {splits}, "
                     f"{len(sizes)} shards ({sum(sizes) / 1e6:.1f} MB), quarantined {dict(source.quarantined)}, "
                     f"rejected {dict(source.rejected)}")
        taken = 0
        for shard in source.shards:
            for key, members in iter_shard(fs.cat_file(build.shard_path(shard.path))):
                if taken == samples:
                    break
                shown.append((f"{source.name}/{key}", sample_from_members(members)))
                taken += 1
            if taken == samples:
                break
    for name, sample in shown:
        lines += ["", name, describe_sample(sample, encoder)]
    if save:
        lines.append("")
        lines += _pictures(shown, Path(save))
    return "\n".join(lines)


def _pictures(shown: list[tuple[str, Sample]], directory: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    cameras = sorted({camera for _, sample in shown for camera in sample.images})
    figure, axes = plt.subplots(len(shown), max(1, len(cameras)), figsize=(2.2 * max(1, len(cameras)), 2.2 * len(shown)),
                                squeeze=False)
    for row, (name, sample) in enumerate(shown):
        for column, camera in enumerate(cameras):
            axis = axes[row][column]
            axis.axis("off")
            if camera in sample.images:
                axis.imshow(np.asarray(Image.open(io.BytesIO(sample.images[camera]))))
            axis.set_title(f"{name.split('/')[-1][:18]} {camera}", fontsize=6)
    figure.tight_layout()
    figure.savefig(directory / "contact_sheet.png", dpi=100)
    plt.close(figure)
    robot = [(name, s) for name, s in shown if s.actions is not None]
    written = [f"images: {directory / 'contact_sheet.png'}"]
    if robot:
        figure, axes = plt.subplots(len(robot), 1, figsize=(6, 2 * len(robot)), squeeze=False)
        for (name, sample), axis in zip(robot, axes[:, 0]):
            axis.plot(sample.actions)
            axis.set_title(name, fontsize=7)
            axis.set_xlabel("step in chunk", fontsize=7)
        figure.tight_layout()
        figure.savefig(directory / "action_chunks.png", dpi=100)
        plt.close(figure)
        written.append(f"action chunks: {directory / 'action_chunks.png'}")
    return written
