"""The wheel carries the top-level data folders (``pipelines/``, ``model/``, ``tokenizers/``) inside the
package as ``kidata/assets/<kind>/``: a wheel can only install packages, and ``kidata.assets`` falls back
to that copy when no checkout sits around it. Everything else about the build is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
DATA_FOLDERS = ("pipelines", "model", "tokenizers")


class BuildWithAssets(build_py):
    """build_py, then the data folders copied under ``kidata/assets/`` of the build tree."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the folders in place
        for kind in DATA_FOLDERS:
            source = HERE / kind
            if not source.is_dir():
                raise SystemExit(f"setup.py: {source} is missing; the wheel ships it as kidata/assets/{kind} "
                                 "(build from a checkout or an sdist that includes it)")
            target = Path(self.build_lib) / "kidata" / "assets" / kind
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithAssets})
