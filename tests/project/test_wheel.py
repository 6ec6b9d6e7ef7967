"""A user's install: the wheel built from this checkout, installed (not editable) into a fresh
environment, runs ``kidata build`` on a shipped recipe and ``kidata demo`` from a folder far from
the checkout: the shipped recipes, presets and demo tokenizer travel inside the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding only the kidata wheel; its dependencies come from the dev environment
    through a .pth line (nothing is downloaded), and the checkout is not on its path."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(root / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((root / "dist").glob("kidata-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", site,
                    str(wheel)], check=True, capture_output=True)
    return root


def run(installed: Path, *arguments: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ""}
    work = installed / "work"
    work.mkdir(exist_ok=True)
    code = "import sys; from kidata.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([str(installed / "venv" / "bin" / "python"), "-c", code, *arguments], cwd=work, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_installed_package_is_the_wheel_not_the_checkout(installed):
    result = run(installed, "assets")
    assert result.returncode == 0, result.stderr
    assert "pipelines/demo.toml" in result.stdout and "model/ki_tiny.toml" in result.stdout
    assert str(ROOT) not in result.stdout and "site-packages/kidata/assets" in result.stdout


@pytest.mark.slow
def test_the_wheel_ships_every_asset_of_the_checkout_under_the_same_name(installed):
    """The build copies the top-level pipelines/, model/ and tokenizers/ into the package: the wheel's
    listing is the checkout's, name for name, and the files are the same bytes."""
    from kidata import assets

    code = "import json; from kidata import assets; print(json.dumps([str(assets.ROOT), assets.listing()]))"
    result = subprocess.run([str(installed / "venv" / "bin" / "python"), "-c", code], cwd=installed,
                            env={**os.environ, "PYTHONPATH": ""}, capture_output=True, text=True, check=True)
    root, listing = json.loads(result.stdout)
    assert listing == assets.listing()
    for kind in assets.KINDS:
        for path in (assets.ROOT / kind).rglob("*"):
            if path.is_file():
                relative = path.relative_to(assets.ROOT)
                assert (Path(root) / relative).read_bytes() == path.read_bytes(), relative


@pytest.mark.slow
def test_the_installed_package_builds_a_shipped_recipe_and_runs_the_demo(installed):
    built = run(installed, "build", "pipelines/demo.toml", "--out", "demo-out", "--workers", "2", "--quiet")
    assert built.returncode == 0, built.stderr[-2000:]
    assert (installed / "work" / "demo-out" / "manifest.json").exists()
    demo = run(installed, "demo", "--out", "demo-out", "--train-steps", "2", "--eval-episodes", "1")
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert "success over 1 episodes per task (fast head / scripted expert / random actions)" in demo.stdout
    assert (installed / "work" / "demo-out" / "run" / "checkpoints" / "latest").exists()
