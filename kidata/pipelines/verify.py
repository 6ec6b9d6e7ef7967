"""``kidata verify OUT``: every shard the manifest lists exists and has its recorded sha256, and the
manifest, the action tokenizer and every shard belong to one build (the build id in each): two
builds that wrote into one folder cannot pass as one."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

from kidata.manifest import ACTION_TOKENIZER_DIR, MANIFEST_FILE, BuildDir, Manifest
from kidata.pipelines.ownership import BUILD_ID_FILE
from kidata.pipelines.storage import not_a_build_folder, output_fs

# a meta.json member is a few hundred bytes; a bigger one is not read (a header's length is data)
_META_MAX_BYTES = 1 << 20


def verify(out: str) -> list[str]:
    """Problems found (empty when the build verifies)."""
    fs, root = output_fs(out)
    build = BuildDir.at(root)
    file = not_a_build_folder(fs, root, out)
    if file:
        return [file]
    if not fs.exists(build.manifest_path):
        return [f"{out}: no {MANIFEST_FILE} (the build did not finish)"]
    manifest, _ = Manifest.read(fs.unstrip_protocol(build.manifest_path))
    problems = _recipe_problems(manifest) + _tokenizer_problems(fs, root, manifest)
    for source in manifest.sources:
        for shard in source.shards:
            path = build.shard_path(shard.path)
            if not fs.exists(path):
                problems.append(f"{shard.path}: missing")
                continue
            data = fs.cat_file(path)
            digest = hashlib.sha256(data).hexdigest()
            if digest != shard.sha256:
                problems.append(f"{shard.path}: sha256 {digest[:12]} != manifest {shard.sha256[:12]}")
            elif manifest.build_id:
                foreign = _foreign_build(data, manifest.build_id)
                if foreign:
                    problems.append(f"{shard.path}: {foreign}")
    return problems


def _recipe_problems(manifest: Manifest) -> list[str]:
    """The recorded recipe is the one the build hashed: the trainer, the policy and the evaluators read it, so an
    edit after the build (``image_size``, a source's tasks) would change them without touching any shard."""
    actual = manifest.recipe.sha256
    if actual == manifest.recipe_sha256:
        return []
    return [f"{MANIFEST_FILE}: its recipe hashes to {actual[:12]}, not to the recipe_sha256 it records "
            f"({manifest.recipe_sha256[:12]}): the recipe was edited after the build; restore the build's "
            f"{MANIFEST_FILE} or rebuild"]


def _tokenizer_problems(fs, root: str, manifest: Manifest) -> list[str]:
    """The action tokenizer folder is the one the manifest's samples were encoded with: its build id
    and its sha256 both agree with the manifest."""
    from kidata.tokenizers import action_tokenizer_files, action_tokenizer_from_files

    directory = BuildDir.at(root).action_tokenizer_path
    problems = []
    if manifest.build_id:
        try:
            written = json.loads(fs.cat_file(f"{directory}/{BUILD_ID_FILE}").decode()).get("build_id")
        except (FileNotFoundError, ValueError, UnicodeDecodeError, AttributeError):
            written = None
        if written != manifest.build_id:
            problems.append(f"{ACTION_TOKENIZER_DIR}/{BUILD_ID_FILE}: build {written} != manifest's build "
                            f"{manifest.build_id} (the tokenizer of another build)")
    files = action_tokenizer_files(fs, directory)
    if not files:
        return problems + [f"{ACTION_TOKENIZER_DIR}/: missing"]
    try:
        digest = action_tokenizer_from_files(files).sha256
    except Exception as error:  # noqa: BLE001 - any unreadable tokenizer is a problem to name, not a crash
        return problems + [f"{ACTION_TOKENIZER_DIR}/: does not load ({type(error).__name__}: {error})"]
    if digest != manifest.action_tokenizer.sha256:
        problems.append(f"{ACTION_TOKENIZER_DIR}/: sha256 {digest[:12]} != manifest {manifest.action_tokenizer.sha256[:12]}")
    return problems


def _foreign_build(data: bytes, build_id: str) -> str:
    """Why a shard's samples are not all of build ``build_id`` ('' when they are)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for member in archive:
                if not member.name.endswith(".meta.json"):
                    continue
                if member.size > _META_MAX_BYTES:
                    return f"{member.name} holds {member.size} bytes (a meta.json holds at most {_META_MAX_BYTES})"
                meta = json.loads(archive.extractfile(member).read())
                found = meta.get("build") if isinstance(meta, dict) else None
                if found != build_id:
                    return f"sample {member.name[:-len('.meta.json')]} is of build {found}, the manifest's is {build_id}"
    except (tarfile.TarError, ValueError, UnicodeDecodeError) as error:
        return f"not a readable shard ({type(error).__name__}: {error})"
    return ""
