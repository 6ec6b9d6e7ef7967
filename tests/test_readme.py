"""Every code block of the README runs: bash blocks' `kidata` commands and python blocks, in order,
in one workspace holding the test fixtures under the names the README uses. A block that cannot
run here says why in a `<!-- readme-test: skip (reason) -->` line above it; the list of those is
pinned below, so a new block is run unless someone writes down why not."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets", reason="the README's blocks read RLDS")
pytest.importorskip("torch")
pytest.importorskip("h5py")

from conftest import shared_path  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"
SKIPPED = [  # (first line of the block, the reason), in README order
    ("make demo   # creates .venv, installs kidata, runs the main job on the embedded default data",
     "this is how the test environment itself is made"),
    ("pip install -e .               # core: numpy, scipy, tokenizers, tiktoken, regex, sentencepiece,",
     "installs packages"),
    ("[[sources]]", "a recipe excerpt; tests/test_lerobot.py builds one on the fixture"),
    ("[[sources]]", "a recipe excerpt; tests/test_delta_actions.py builds one on a DROID-layout dataset"),
    ("kidata build pipelines/metaworld.toml --out data/metaworld          # 3 tasks x 200 noisy-expert episodes, 9-21 min",
     "the measurement itself: about 65 minutes on 2 CPU cores, and about 4 hours more for MT10; its pieces run above"),
    ("kidata build pipelines/metaworld_cotrain.toml --out runs/cmp/data",
     "hours of CPU; tests/test_compare.py runs the machinery on a 4-step budget"),
    ("# kidata/sources/my_robot.py", "a module to add to the package, not a script"),
    ("# kidata/cli/hello.py", "a module to add to the package, not a script"),
]
# what a `kidata train` line of the README trains here: the command as written, shortened
SHORT_TRAINING = ["--train.steps", "2", "--eval.every", "0", "--eval.batches", "1", "--checkpoint.every", "1",
                  "--log.progress", "false"]


def blocks() -> list[tuple[str, str, str | None]]:
    """(language, code, skip reason or None) of every fenced block with a language."""
    found, marker = [], None
    lines = README.read_text().splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        match = re.match(r"<!-- readme-test: skip \((.+)\) -->", line)
        if match:
            marker = match.group(1)
        elif line.startswith("```") and len(line) > 3:
            language, body = line[3:].strip(), []
            index += 1
            while not lines[index].startswith("```"):
                body.append(lines[index])
                index += 1
            found.append((language, "\n".join(body), marker))
            marker = None
        elif line.startswith("```"):  # a block without a language (a diagram): skip to its end
            index += 1
            while not lines[index].startswith("```"):
                index += 1
        elif line.strip() and not line.startswith("<!--"):
            marker = None
        index += 1
    return found


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    import rlds_fixtures as fx

    from kidata.sources.synthetic import action_chunks

    root = tmp_path_factory.mktemp("readme")
    bridge = shared_path("data", "rlds", "bridge_dataset", "1.0.0")
    for name in ("bridge_dataset", "my_robot"):
        (root / "data" / name).mkdir(parents=True)
        (root / "data" / name / "1.0.0").symlink_to(bridge)
    (root / "data" / "libero_goal").mkdir()
    fx.write_libero_hdf5(root / "data" / "libero_goal" / "KITCHEN_SCENE1_open_the_drawer_demo.hdf5",
                         [fx.raw_libero_demo(0, 10), fx.raw_libero_demo(1, 12)])
    (root / "fast_universal").symlink_to(shared_path("reference", "fast_universal"))
    np.save(root / "chunks.npy", action_chunks(64, 10, 7, seed=1))
    np.save(root / "train_chunks.npy", action_chunks(2000, 10, 7, seed=2))
    coco = shared_path("data", "coco_detection")
    (root / "coco").mkdir()
    (root / "coco" / "instances_val2017.json").symlink_to(coco / "annotations" / "instances_val2017.json")
    (root / "coco" / "val2017").symlink_to(coco / "images" / "val2017")
    images = json.loads((coco / "annotations" / "instances_val2017.json").read_text())["images"]
    (root / "coco" / "captions_val2017.json").write_text(json.dumps({"images": images, "annotations": [
        {"id": i, "image_id": image["id"], "caption": "a photo"} for i, image in enumerate(images)]}))
    (root / "vqa").symlink_to(shared_path("data", "vqav2_allennlp"))
    return root


SERVERS: list[subprocess.Popen] = []  # `kidata serve` lines run in the background until the test ends


def start_server(words: list[str], cwd: Path) -> None:
    """A README `kidata serve` line, started as a user would in another shell; waits for /healthz."""
    import time
    import urllib.request

    port = words[words.index("--port") + 1]
    process = subprocess.Popen([sys.executable, "-m", "kidata.cli", *words[1:]], cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    SERVERS.append(process)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{' '.join(words)}: {process.stderr.read()[-2000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{' '.join(words)}: no answer on port {port} in 300 s")


def run_bash(code: str, cwd: Path) -> None:
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        assert words[0] == "kidata", f"a README bash line that is not a kidata command: {line}"
        if words[1:2] == ["train"]:
            words += SHORT_TRAINING
        if words[1:2] == ["serve"]:
            start_server(words, cwd)
            continue
        result = subprocess.run([sys.executable, "-m", "kidata.cli", *words[1:]], cwd=cwd, capture_output=True,
                                text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2"})
        assert result.returncode == 0, f"{line}\n{result.stderr[-2000:]}"


def test_the_skipped_blocks_are_the_ones_pinned_here_each_with_its_reason():
    skipped = [(code.splitlines()[0], reason) for _, code, reason in blocks() if reason]
    assert skipped == SKIPPED


@pytest.mark.slow
def test_every_readme_block_runs_on_the_fixtures(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    ran = 0
    try:
        for language, code, reason in blocks():
            if reason:
                continue
            assert language in ("bash", "python"), f"a README block in {language!r}: say how to run it"
            if language == "bash":
                run_bash(code, workspace)
            else:
                exec(compile(code, f"README block {ran}", "exec"), {"__name__": "__readme__"})
            ran += 1
    finally:
        for server in SERVERS:
            server.terminate()
            server.wait(timeout=30)
    assert ran >= 12
    assert (workspace / "runs" / "mine" / "checkpoints" / "latest").exists()
