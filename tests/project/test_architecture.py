"""The package's rules, checked: imports run one way between its folders (no circles), modules stay
small unless a reason is written here, and the linter is clean."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "kidata"

# Each layer may import only the layers named here (function-level imports included). The flow:
# base <- sources, tokenizers <- pipelines <- loader <- training -> model; envs for sources and
# eval; inference (policy) needs model, tokenizers and normalization, never the build.
BASE = {"kidata", "kidata.assets", "kidata.config", "kidata.delta", "kidata.hashing", "kidata.images", "kidata.lazy",
        "kidata.locate", "kidata.manifest", "kidata.normalize", "kidata.progress", "kidata.schema", "kidata.stats_formats"}
ALLOWED = {
    "base": BASE,
    "kidata.envs": BASE,
    "kidata.sources": BASE | {"kidata.sources", "kidata.envs"},
    "kidata.tokenizers": BASE | {"kidata.tokenizers"},
    "kidata.model": BASE | {"kidata.model"},
    "kidata.pipelines": BASE | {"kidata.pipelines", "kidata.sources", "kidata.tokenizers", "kidata.envs"},
    "kidata.loader": BASE | {"kidata.loader", "kidata.pipelines.shards", "kidata.tokenizers.prompt"},
    "kidata.observation": BASE,  # a policy's caller inputs checked as data
    "kidata.policy": BASE | {"kidata.model", "kidata.tokenizers", "kidata.loader.collate", "kidata.training.config",
                             "kidata.training.checkpoint", "kidata.training.run_dir", "kidata.observation"},
    "kidata.training": BASE | {"kidata.training", "kidata.model", "kidata.loader", "kidata.tokenizers",
                               "kidata.policy", "kidata.eval.metaworld"},
    "kidata.eval": BASE | {"kidata.eval", "kidata.envs", "kidata.policy", "kidata.loader", "kidata.model",
                           "kidata.training", "kidata.tokenizers", "kidata.pipelines.recipe"},
    "kidata.serving": BASE | {"kidata.serving", "kidata.policy"},
    "kidata.demo": None,  # the journey end to end: may use everything
    "kidata.compare": None,  # builds, trains and evaluates runs: may use everything
    "kidata.cli": None,
}
# Modules over ~400 lines, each with the reason it stays whole.
LONG_MODULES = {
    "kidata/tokenizers/fast.py": "one tokenizer's fit, encode, decode and files around one invariant (ids <-> "
                                 "quantized DCT coefficients); split, the halves would share every private helper",
    "kidata/sources/rlds.py": "the traced per-process parser and the reader it serves change together (a feature "
                              "the parser skips is one the reader never sees)",
    "kidata/model/ki_model.py": "one network's three passes (the training forward, cached flow sampling, cached greedy "
                                "generation) share its layers' project/finish, masks and key/value layout; split, each "
                                "would reach into the others' private helpers",
}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imported_modules(nodes) -> set[str]:
    """The kidata modules these import statements load (``from kidata.x import y`` names the
    submodule ``kidata.x.y`` when there is one, else the module ``kidata.x``)."""
    known, found = modules(), set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("kidata"):
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("kidata")}
    return {name for name in found if name in known}


def imports_of(path: Path) -> set[str]:
    return imported_modules(ast.walk(ast.parse(path.read_text())))


def layer(module: str) -> str:
    for name in sorted(ALLOWED, key=len, reverse=True):
        if name != "base" and (module == name or module.startswith(name + ".")):
            return name
    assert module in BASE, f"{module} belongs to no layer: add it to ALLOWED"
    return "base"


def allowed(importer: str, imported: str) -> bool:
    rule = ALLOWED[layer(importer)]
    # "kidata" (the package's __init__) is allowed as itself, not as a prefix of everything
    return rule is None or any(imported == ok or (ok != "kidata" and imported.startswith(ok + ".")) for ok in rule)


def test_every_import_follows_the_layer_rules():
    broken = [f"{importer} imports {imported}" for importer, path in modules().items()
              for imported in sorted(imports_of(path)) if not allowed(importer, imported)]
    assert broken == []


def test_the_rules_catch_an_import_against_the_flow():
    assert not allowed("kidata.sources.rlds", "kidata.pipelines.build")
    assert not allowed("kidata.policy", "kidata.pipelines.build")
    assert not allowed("kidata.model.ki_model", "kidata.training.trainer")
    assert allowed("kidata.pipelines.build", "kidata.sources.registry")


def test_no_import_circles_at_module_level():
    # module level only (function-level imports are deferred on purpose); a submodule importing its
    # own package's __init__ is how Python loads packages, not a circle
    graph = {name: {m for m in imported_modules(ast.parse(path.read_text()).body)
                    if m != name and not name.startswith(m + ".")}
             for name, path in modules().items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 1:
                return trail + [node, child]
            if child not in state:
                found = visit(child, trail + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            assert visit(module, []) is None


def test_modules_stay_small_unless_a_reason_is_written_down():
    long = {str(path.relative_to(PACKAGE.parent)) for path in modules().values()
            if len(path.read_text().splitlines()) > 400}
    assert long <= set(LONG_MODULES), f"over 400 lines without a stated reason: {sorted(long - set(LONG_MODULES))}"


def test_the_linter_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is in the dev extra")
    result = subprocess.run([ruff, "check", "kidata", "tests", "benchmarks"], capture_output=True, text=True,
                            cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stdout[-3000:]


def test_no_package_face_exports_a_name_that_is_also_its_submodule():
    """``from kidata.loader import collate`` would give the module once it is imported: a face's
    lazily exported names must not shadow (or be shadowed by) its submodules."""
    import importlib
    import pkgutil

    for name in ("model", "loader", "training", "pipelines", "sources", "eval"):
        package = importlib.import_module(f"kidata.{name}")
        submodules = {info.name for info in pkgutil.iter_modules(package.__path__)}
        assert not set(getattr(package, "_EXPORTS", {})) & submodules, name



def test_the_shipped_data_lives_in_top_level_folders_that_are_not_python_packages():
    """The design's layout: code in ``kidata/``, the recipes, presets and fitted tokenizers it ships in
    top-level ``pipelines/``, ``model/`` and ``tokenizers/``; none holds an ``__init__.py`` (a top-level
    ``tokenizers`` package would shadow Hugging Face's), and the package keeps no second copy."""
    from kidata import assets

    top = PACKAGE.parent
    assert assets.ROOT == top
    for kind in assets.KINDS:
        assert (top / kind).is_dir() and not list((top / kind).rglob("__init__.py")), kind
        assert not (PACKAGE / "assets" / kind).exists(), f"kidata/assets/{kind}: the data lives in the top-level {kind}/"
