"""Every code block of the README and of the docs pages runs: bash blocks' `kidata` commands and
python blocks, in order (the README, then the pages in the order of mkdocs.yml's nav), in one
workspace holding the test fixtures under the names the pages use. A block that cannot run here says
why in a `<!-- readme-test: skip (reason) -->` line above it; the list of those is pinned below, so
a new block is run unless someone writes down why not."""

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

from support.data import shared_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SKIPPED = [  # (document, first line of the block, the reason), in reading order
    ("README.md",
     "pip install -c constraints.txt -e \".[dev]\"",
     "installs packages"),
    ("README.md",
     "kidata assets copy pipelines/my_robot.toml            # an example recipe: set its path and key mapping (instant)",
     "docs/quickstart.md holds these commands and runs them on the fixtures"),
    ("README.md",
     "import numpy as np",
     "docs/quickstart.md runs this block after training"),
    ("README.md",
     "make demo   # creates .venv, installs kidata, runs the main job on the embedded default data",
     "this is how the test environment itself is made"),
    ("docs/quickstart.md",
     "make demo   # creates .venv, installs kidata, runs the main job on the embedded default data",
     "this is how the test environment itself is made"),
    ("docs/quickstart.md",
     "pip install -e .               # core: numpy, scipy, tokenizers, tiktoken, regex, sentencepiece,",
     "installs packages"),
    ("docs/sources.md",
     "[[sources]]",
     "a recipe excerpt; tests/sources/test_lerobot.py builds one on the fixture"),
    ("docs/finetuning.md",
     "[[sources]]",
     "a recipe excerpt; tests/test_delta_actions.py builds one on a DROID-layout dataset"),
    ("docs/metaworld.md",
     "kidata build pipelines/metaworld.toml --out data/metaworld          # 3 tasks x 200 noisy-expert episodes, 9-21 min",
     "the measurement itself: about 65 minutes on 2 CPU cores, and about 4 hours more for MT10; its pieces run above"),
    ("docs/comparison.md",
     "kidata build pipelines/metaworld_cotrain.toml --out runs/cmp/data",
     "hours of CPU; tests/compare/test_compare.py runs the machinery on a 4-step budget"),
    ("docs/contributing.md",
     "# kidata/sources/my_robot.py",
     "a module to add to the package, not a script"),
    ("docs/contributing.md",
     "# kidata/cli/hello.py",
     "a module to add to the package, not a script"),
]
# what a `kidata train` line of the README trains here: the command as written, shortened
SHORT_TRAINING = ["--train.steps", "2", "--eval.every", "0", "--eval.batches", "1", "--checkpoint.every", "1",
                  "--log.progress", "false"]


def documents() -> list[Path]:
    """The README, then every docs page in the order of mkdocs.yml's nav (mkdocs --strict refuses a
    page left out of the nav, so this is every page)."""
    import yaml

    def pages(entries) -> list[str]:
        found = []
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            found += pages(value) if isinstance(value, list) else [value]
        return found

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    return [ROOT / "README.md"] + [ROOT / "docs" / page for page in pages(nav)]


def blocks() -> list[tuple[str, str, str, str | None]]:
    """(document, language, code, skip reason or None) of every fenced block with a language."""
    return [(path.relative_to(ROOT).as_posix(), *block) for path in documents() for block in document_blocks(path)]


def document_blocks(path: Path) -> list[tuple[str, str, str | None]]:
    """(language, code, skip reason or None) of every fenced block with a language in one file."""
    found, marker = [], None
    lines = path.read_text().splitlines()
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
    from support import rlds as fx

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
    """A `kidata serve` line of a page, started as a user would in another shell; waits for /healthz."""
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
        assert words[0] == "kidata", f"a bash line that is not a kidata command: {line}"
        if words[1:2] == ["train"]:
            words += SHORT_TRAINING
        if words[1:2] == ["serve"]:
            start_server(words, cwd)
            continue
        result = subprocess.run([sys.executable, "-m", "kidata.cli", *words[1:]], cwd=cwd, capture_output=True,
                                text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2"})
        assert result.returncode == 0, f"{line}\n{result.stderr[-2000:]}"


def test_the_skipped_blocks_are_the_ones_pinned_here_each_with_its_reason():
    skipped = [(document, code.splitlines()[0], reason) for document, _, code, reason in blocks() if reason]
    assert skipped == SKIPPED


def test_every_relative_link_of_the_readme_names_a_file_of_the_checkout():
    """mkdocs --strict checks the docs pages' links; the README is read on its own, so this checks its."""
    text = (ROOT / "README.md").read_text()
    targets = [target.split("#")[0] for target in re.findall(r"\]\(([^)]+)\)", text) if "://" not in target]
    assert targets and [target for target in targets if not (ROOT / target).exists()] == []


def test_the_docs_pages_are_read_in_the_order_of_the_site_and_include_the_concepts():
    names = [path.relative_to(ROOT).as_posix() for path in documents()]
    assert names[:3] == ["README.md", "docs/index.md", "docs/concepts.md"] and "docs/api.md" in names
    assert all((ROOT / name).is_file() for name in names)


@pytest.mark.slow
def test_every_readme_and_docs_block_runs_on_the_fixtures(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    ran = 0
    try:
        for document, language, code, reason in blocks():
            if reason:
                continue
            assert language in ("bash", "python"), f"a block of {document} in {language!r}: say how to run it"
            if language == "bash":
                run_bash(code, workspace)
            else:
                exec(compile(code, f"{document} block {ran}", "exec"), {"__name__": "__readme__"})
            ran += 1
    finally:
        for server in SERVERS:
            server.terminate()
            server.wait(timeout=30)
    assert ran >= 12
    assert (workspace / "runs" / "mine" / "checkpoints" / "latest").exists()
