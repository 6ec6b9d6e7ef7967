"""Fault injection in builds: what ``--force`` may remove, two builds into one folder, and the
build id that ties a manifest, its action tokenizer and its shards together. Builds read the
LeRobot fixture (parquet + mp4, ~2 s a build, no TensorFlow)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("av", reason="LeRobot videos need the 'lerobot' extra (PyAV)")

from support.data import shared_path  # noqa: E402

from kidata.pipelines.build import BuildError, build  # noqa: E402
from kidata.pipelines.recipe import load_recipe  # noqa: E402
from kidata.pipelines.verify import verify  # noqa: E402


def lerobot_build_recipe(path: Path, units: int = 1):
    from support.recipes import lerobot_recipe

    return load_recipe(lerobot_recipe(path, shared_path("data", "lerobot", "bridge_v3"), units=units))


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    """Two finished builds of two recipes (units_per_source 1 and 2) of the same source."""
    root = tmp_path_factory.mktemp("two")
    first = lerobot_build_recipe(root / "a.toml", units=1)
    second = lerobot_build_recipe(root / "b.toml", units=2)
    build(first, str(root / "a"), progress=False)
    build(second, str(root / "b"), progress=False)
    return root, first, second


def copy_build(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_force_refuses_naming_the_users_files_and_removes_none_of_them(two_builds, tmp_path):
    root, _, second = two_builds
    out = copy_build(root / "a", tmp_path / "out")
    (out / "run" / "checkpoints").mkdir(parents=True)
    (out / "run" / "checkpoints" / "model.safetensors").write_bytes(b"weights")
    (out / "notes.txt").write_text("mine")
    (out / "bridge" / "labels.csv").write_text("mine too")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(BuildError, match=r"holds files no kidata build wrote \(bridge/labels.csv, notes.txt, run/\); "
                                         r"--force removes only a build's own files"):
        build(second, str(out), force=True, progress=False)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_force_replaces_a_build_of_another_recipe_removing_only_its_files(two_builds, tmp_path):
    root, _, second = two_builds
    out = copy_build(root / "a", tmp_path / "out")
    (out / "inspect").mkdir()  # kidata inspect's pictures: a kidata command wrote them
    (out / "inspect" / "samples.png").write_bytes(b"png")
    build(second, str(out), force=True, progress=False)
    assert verify(str(out)) == []
    assert json.loads((out / "manifest.json").read_text())["recipe_sha256"] == second.sha256
    assert {p.name for p in (out / "bridge").iterdir()} == {p.name for p in (root / "b" / "bridge").iterdir()}
    assert not (out / "inspect").exists()


@pytest.mark.parametrize("state", ["{", "[1]", '{"recipe": {}}'])
def test_a_build_folder_whose_state_file_records_no_recipe_is_refused_naming_it_and_force_replaces_it(
        two_builds, tmp_path, state):
    root, first, _ = two_builds
    out = copy_build(root / "a", tmp_path / "out")
    (out / "_state" / "recipe.json").write_text(state)
    with pytest.raises(BuildError, match=rf"^{out}/_state/recipe.json does not record a recipe \(it holds no "
                                         rf"'recipe_sha256'\), so the build in {out} cannot be resumed: use --force to "
                                         r"replace it$"):
        build(first, str(out), progress=False)
    build(first, str(out), force=True, progress=False)
    assert verify(str(out)) == [] and (out / "manifest.json").read_bytes() == (root / "a" / "manifest.json").read_bytes()


def test_a_build_into_a_folder_another_live_build_holds_is_refused_naming_its_pid_and_host(two_builds, tmp_path):
    root, first, _ = two_builds
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / "build.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                    "started": "2026-01-01T00:00:00Z"}))
        with pytest.raises(BuildError, match=rf"is being built by pid {holder.pid} on host {socket.gethostname()} "
                                             r".*lock file .*build.lock"):
            build(first, str(out), progress=False)
        assert sorted(p.name for p in out.iterdir()) == ["build.lock"]
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_build_that_died_is_named_and_taken_over(two_builds, tmp_path, capfd):
    root, first, _ = two_builds
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / "build.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    build(first, str(out), progress=False)
    assert f"left by pid {dead.pid}" in capfd.readouterr().err
    assert not (out / "build.lock").exists() and verify(str(out)) == []


def test_verify_names_an_action_tokenizer_of_another_build(two_builds, tmp_path):
    root, _, _ = two_builds
    out = copy_build(root / "a", tmp_path / "out")
    shutil.rmtree(out / "fast_tokenizer")
    shutil.copytree(root / "b" / "fast_tokenizer", out / "fast_tokenizer")
    problems = verify(str(out))
    assert any(p.startswith("fast_tokenizer/kidata_build.json: build ") and "the tokenizer of another build" in p
               for p in problems), problems


def test_verify_names_a_recipe_edited_in_the_manifest_after_the_build(two_builds, tmp_path):
    root, first, _ = two_builds
    out = copy_build(root / "a", tmp_path / "out")
    written = json.loads((out / "manifest.json").read_text())
    written["recipe"]["mixture"]["image_size"] = 32
    (out / "manifest.json").write_text(json.dumps(written))
    edited = json.loads(json.dumps(first.canonical()))
    edited["mixture"]["image_size"] = 32
    from kidata.hashing import json_sha256

    assert verify(str(out)) == [f"manifest.json: its recipe hashes to {json_sha256(edited)[:12]}, not to the "
                                f"recipe_sha256 it records ({first.sha256[:12]}): the recipe was edited after the "
                                "build; restore the build's manifest.json or rebuild"]


def test_verify_names_a_shard_of_another_build_even_when_the_manifest_lists_its_hash(two_builds, tmp_path):
    root, _, _ = two_builds
    out = copy_build(root / "a", tmp_path / "out")
    other = json.loads((root / "b" / "manifest.json").read_text())["sources"][0]["shards"][0]
    (out / other["path"]).write_bytes((root / "b" / other["path"]).read_bytes())
    manifest = json.loads((out / "manifest.json").read_text())  # as a racing build's unit record would list it
    manifest["sources"][0]["shards"] = [other if s["path"] == other["path"] else s
                                        for s in manifest["sources"][0]["shards"]]
    (out / "manifest.json").write_text(json.dumps(manifest))
    problems = verify(str(out))
    assert len(problems) == 1 and problems[0].startswith(f"{other['path']}: sample ") and "is of build" in problems[0]


def test_every_sample_the_tokenizer_and_the_manifest_carry_the_same_build_id(two_builds):
    root, _, _ = two_builds
    manifest = json.loads((root / "a" / "manifest.json").read_text())
    tokenizer = json.loads((root / "a" / "fast_tokenizer" / "kidata_build.json").read_text())
    assert len(manifest["build_id"]) == 16 and tokenizer["build_id"] == manifest["build_id"]
    assert manifest["build_id"] != json.loads((root / "b" / "manifest.json").read_text())["build_id"]


def zero_second_half_of_member(shard: Path, suffix: str) -> str:
    """Overwrites the second half of the first member ending in ``suffix`` with zeros (the shard
    keeps its size; only its sha256 tells); returns the sample's key."""
    import tarfile

    with tarfile.open(shard) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith(suffix))
    data = bytearray(shard.read_bytes())
    half = member.size // 2
    data[member.offset_data + half: member.offset_data + member.size - 2] = bytes(member.size - half - 2)
    shard.write_bytes(bytes(data))
    return member.name.split(".", 1)[0]


def test_a_sample_whose_image_does_not_decode_is_skipped_and_counted_by_default(two_builds, tmp_path, capfd):
    from itertools import islice

    from kidata.loader.mixture import MixtureDataset, MixtureSettings
    from kidata.manifest import BuildDir

    root, _, _ = two_builds
    out = copy_build(root / "a", tmp_path / "out")
    manifest = json.loads((out / "manifest.json").read_text())
    shard = next(s for s in manifest["sources"][0]["shards"] if s["split"] == "train")
    total = sum(s["samples"] for s in manifest["sources"][0]["shards"] if s["split"] == "train")
    key = zero_second_half_of_member(out / shard["path"], ".base_0.jpg")
    # the trainer's defaults: no sha256 check
    dataset = MixtureDataset(BuildDir(str(out / "manifest.json")), MixtureSettings(shuffle_buffer=1))
    samples = list(islice(iter(dataset), total - 1))
    assert key not in {s["__key__"] for s in samples} and len({s["__key__"] for s in samples}) == total - 1
    assert dataset.corrupt_samples == {"bridge": 1}
    assert f"loader: skipped sample {key} of shard {out}/{shard['path']}: base_0.jpg does not decode" in capfd.readouterr().err


def child_pids(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def ignores_sigint(pid: int) -> bool:
    """Whether the process ignores SIGINT now: a build's coordinator does while it spawns a worker
    (the worker inherits the ignored Ctrl-C), and pausing a worker it is still writing to would
    hold it there."""
    import signal

    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process parents from Linux's /proc")
@pytest.mark.parametrize("stop", ["SIGTERM", "Ctrl-C", "SIGKILL"])
def test_a_stopped_two_worker_build_ends_in_one_sentence_and_leaves_no_worker_behind(tmp_path, stop):
    import signal
    import time

    from support.recipes import lerobot_recipe

    recipe = lerobot_recipe(tmp_path / "recipe.toml", shared_path("data", "lerobot", "bridge_v3"), units=3)
    command = [sys.executable, "-m", "kidata.cli", "build", str(recipe), "--out", str(tmp_path / "out"), "--workers",
               "2", "--quiet"]
    # a shell starts background jobs with Ctrl-C ignored, and the command would inherit that: it
    # starts as a terminal's foreground command does, with SIGINT's default
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def spawned_workers() -> set[int]:  # not multiprocessing's resource tracker, also a child
        found = set()
        for pid in child_pids(process.pid):
            try:
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.add(pid)
            except OSError:  # ended meanwhile
                pass
        return found

    deadline = time.time() + 60
    while time.time() < deadline and len(spawned_workers()) < 2 and process.poll() is None:
        time.sleep(0.05)
    workers = spawned_workers() | child_pids(process.pid)
    assert len(spawned_workers()) == 2, "the build's two workers never started"
    while time.time() < deadline and ignores_sigint(process.pid):  # the spawn's SIGINT-ignored window
        time.sleep(0.05)
    for pid in spawned_workers():  # paused, they finish no job: the build is certainly running when stopped
        os.kill(pid, signal.SIGSTOP)
    if stop == "Ctrl-C":  # the terminal sends SIGINT to the whole foreground process group
        os.killpg(process.pid, signal.SIGINT)
    else:
        os.kill(process.pid, getattr(signal, stop))
    for pid in workers:
        if alive(pid):
            os.kill(pid, signal.SIGCONT)
    try:
        err = process.communicate(timeout=60)[1]
        deadline = time.time() + 10
        while time.time() < deadline and any(alive(pid) for pid in workers):
            time.sleep(0.1)
        assert not any(alive(pid) for pid in workers)
    finally:  # whatever failed, no process of this test outlives it
        for pid in [process.pid, *workers]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        process.wait()
    if stop != "SIGKILL":
        signum = signal.SIGTERM if stop == "SIGTERM" else signal.SIGINT
        assert process.returncode == 128 + signum, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines == [f"kidata build: stopped by {signal.Signals(signum).name}; the units {tmp_path / 'out'} "
                         "completed are kept: the same command resumes the build"], err


def test_a_full_disk_during_a_build_is_one_sentence_and_the_same_command_resumes(tmp_path, capsys, monkeypatch):
    import errno

    from support.recipes import lerobot_recipe

    import kidata.pipelines.build as build_module
    from kidata.cli import main

    recipe = lerobot_recipe(tmp_path / "recipe.toml", shared_path("data", "lerobot", "bridge_v3"), units=1)
    out = tmp_path / "out"
    real = build_module.write_text

    def full_at_the_manifest(fs, path, text):
        if path.endswith("/manifest.json"):
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real(fs, path, text)

    monkeypatch.setattr(build_module, "write_text", full_at_the_manifest)
    assert main(["build", str(recipe), "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"kidata build: the disk is full ({out}/manifest.json); the units {out} completed are kept: free space and run "
        "the same command to resume"]
    monkeypatch.setattr(build_module, "write_text", real)
    assert main(["build", str(recipe), "--out", str(out), "--quiet"]) == 0
    assert verify(str(out)) == []


@pytest.mark.parametrize("workers", [0, -2, 100_000])
def test_a_worker_count_outside_what_a_build_runs_is_refused_naming_the_range(two_builds, tmp_path, workers):
    _, first, _ = two_builds
    with pytest.raises(BuildError, match=rf"--workers {workers}: a build runs 1 to 256 worker processes"):
        build(first, str(tmp_path / "out"), workers=workers, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_fast_fit_without_robot_sources_is_refused_before_the_output_is_touched(tmp_path):
    from support.recipes import RecipeDraft, source

    from kidata.pipelines.recipe import parse_recipe

    recipe = parse_recipe(RecipeDraft({"name": "m"}, (source("scenes", "metaworld_scenes", tasks=["reach"]),)).tables())
    with pytest.raises(BuildError, match=r"^\[mixture\] fast_tokenizer fits FAST on the robot sources' actions and this "
                                         r"recipe has none: add a robot source, or for a mixture of VLM sources alone set "
                                         r"fast_tokenizer = \{ bins = 256 \} or the path of a fitted tokenizer$"):
        build(recipe, str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()
