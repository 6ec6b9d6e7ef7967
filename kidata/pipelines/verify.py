"""``kidata verify OUT``: every shard the manifest lists exists and has its recorded sha256."""

from __future__ import annotations

import hashlib

from kidata.manifest import Manifest
from kidata.pipelines.storage import output_fs


def verify(out: str) -> list[str]:
    """Problems found (empty when the build verifies)."""
    fs, root = output_fs(out)
    manifest_path = f"{root}/manifest.json"
    if not fs.exists(manifest_path):
        return [f"{out}: no manifest.json (the build did not finish)"]
    manifest, _ = Manifest.read(fs.unstrip_protocol(manifest_path))
    problems = []
    for source in manifest.sources:
        for shard in source.shards:
            path = f"{root}/{shard.path}"
            if not fs.exists(path):
                problems.append(f"{shard.path}: missing")
                continue
            digest = hashlib.sha256(fs.cat_file(path)).hexdigest()
            if digest != shard.sha256:
                problems.append(f"{shard.path}: sha256 {digest[:12]} != manifest {shard.sha256[:12]}")
    return problems
