"""The package's rules, checked: imports run one way between its folders (no circles), modules stay
small unless a reason is written here, and the linter is clean."""

from __future__ import annotations

import ast
import functools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "kidata"

# The layers, lowest first. A module may import its own folder and any folder of a lower layer,
# never one of its own layer's other folders nor a higher one (function-level imports and the
# packages' lazily exported names included; there is no list of exceptions). Why this order: each
# layer needs only what is below it, with the data: simulators (envs) feed the Meta-World reader,
# so they sit under the sources; the policy is built from what training writes; the evaluators
# act with a policy; the journeys (serving, compare, demo) use an evaluator or the policy; the
# command line calls them all.
GROUND = {"kidata", "kidata.assets", "kidata.choices", "kidata.config", "kidata.delta", "kidata.hashing", "kidata.images",
          "kidata.lazy", "kidata.locate", "kidata.manifest", "kidata.normalize", "kidata.observation", "kidata.progress",
          "kidata.recipe", "kidata.schema", "kidata.stats_formats"}
LAYERS = (
    ("ground",),
    ("kidata.envs",),
    ("kidata.sources", "kidata.tokenizers", "kidata.model"),
    ("kidata.pipelines",),
    ("kidata.loader",),
    ("kidata.training",),
    ("kidata.policy",),
    ("kidata.eval",),
    ("kidata.serving", "kidata.compare", "kidata.demo"),
    ("kidata.cli",),
)
# What the order alone allows and the design still forbids: the network never imports data code
# (a simulator included), inference (the policy) never imports the build or a simulator.
NEVER = {"kidata.model": {"kidata.envs"}, "kidata.tokenizers": {"kidata.envs"},
         "kidata.policy": {"kidata.pipelines", "kidata.envs"}}
RANK = {group: rank for rank, groups in enumerate(LAYERS) for group in groups}
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


@functools.lru_cache(maxsize=1)
def modules() -> dict[str, Path]:
    """Every module of the package (dotted name -> file); read once per test session."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imported_modules(nodes) -> set[str]:
    """The kidata modules these import statements load (``from kidata.x import y`` names the
    submodule ``kidata.x.y`` when there is one, else the module ``kidata.x``), and the modules a
    package face's ``_EXPORTS`` table loads by name on first use."""
    known, found = modules(), set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("kidata"):
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("kidata")}
        elif (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets)
              and isinstance(node.value, ast.Dict)):
            found |= {value.value for value in node.value.values if isinstance(value, ast.Constant)}
    return {name for name in found if name in known}


@functools.lru_cache(maxsize=None)
def imports_of(path: Path) -> frozenset[str]:
    return frozenset(imports_of_text(path.read_text()))


def imports_of_text(source: str) -> set[str]:
    """Every kidata module a file's text imports: at module level, inside functions, lazily by name."""
    return imported_modules(ast.walk(ast.parse(source)))


def layer(module: str) -> str:
    """The folder (``kidata.x``) or ``ground`` a module belongs to."""
    if module in GROUND:
        return "ground"
    group = ".".join(module.split(".")[:2])
    assert group in RANK, f"{module} belongs to no layer: add it to LAYERS"
    return group


def allowed(importer: str, imported: str) -> bool:
    """Whether ``importer`` may import ``imported``: its own folder, or a folder of a lower layer
    that the design does not forbid it."""
    mine, theirs = layer(importer), layer(imported)
    if mine == theirs:
        return True
    return RANK[theirs] < RANK[mine] and theirs not in NEVER.get(mine, set())


def test_every_import_follows_the_layer_rules():
    broken = [f"{importer} imports {imported}" for importer, path in modules().items()
              for imported in sorted(imports_of(path)) if not allowed(importer, imported)]
    assert broken == []


def test_the_rules_catch_an_import_against_the_flow():
    assert not allowed("kidata.sources.rlds", "kidata.pipelines.build")
    assert not allowed("kidata.policy.from_run", "kidata.pipelines.build")
    assert not allowed("kidata.model.ki_model", "kidata.training.trainer")
    assert not allowed("kidata.training.trainer", "kidata.policy")
    assert not allowed("kidata.training.trainer", "kidata.eval.metaworld")
    assert not allowed("kidata.sources.rlds", "kidata.tokenizers.fast")  # a sibling of the same layer
    assert not allowed("kidata.model.ki_model", "kidata.envs.metaworld")
    assert allowed("kidata.pipelines.build", "kidata.sources.registry")
    assert allowed("kidata.sources.metaworld", "kidata.envs.metaworld")
    assert allowed("kidata.eval.during_training", "kidata.training.closed_loop")


def test_a_lazy_import_against_the_flow_is_found_and_refused(tmp_path):
    """A function-level import and a face's lazily exported name count as imports: planted in a
    copy of the trainer, each is found and breaks the rules."""
    planted = (PACKAGE / "training" / "trainer.py").read_text() + (
        "\n\ndef _planted():\n    from kidata.eval.metaworld import evaluate_metaworld\n\n    return evaluate_metaworld\n"
        "\n\n_EXPORTS = {\"Policy\": \"kidata.policy.robot_policy\"}\n")
    found = imports_of_text(planted)
    assert {"kidata.eval.metaworld", "kidata.policy.robot_policy"} <= found
    assert [m for m in sorted(found) if not allowed("kidata.training.trainer", m)] == [
        "kidata.eval.metaworld", "kidata.policy.robot_policy"]


def import_graph(level: str) -> dict[str, set[str]]:
    """Who imports whom, every import counted (function-level ones too), collapsed to ``level``:
    ``module`` (one node per file) or ``layer`` (one node per folder). A submodule importing its
    own package's ``__init__`` is how Python loads packages, not an edge."""
    graph: dict[str, set[str]] = {}
    for name, path in modules().items():
        node = name if level == "module" else layer(name)
        edges = graph.setdefault(node, set())
        for imported in imports_of(path):
            if imported == name or name.startswith(imported + "."):
                continue
            target = imported if level == "module" else layer(imported)
            if target != node:
                edges.add(target)
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
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

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def test_no_import_circles_between_files_or_folders_lazy_imports_included():
    """Checked at two levels. Files: a deferred (function-level) import hides a circle from the
    interpreter, not from a reader, who still cannot understand one file without the other.
    Folders: the layer rules already make this graph flow one way; checking it here too states
    the promise on its own (no two folders depend on each other by any path)."""
    assert find_circle(import_graph("module")) is None
    assert find_circle(import_graph("layer")) is None


def test_the_circle_check_finds_a_circle_closed_by_a_lazy_import():
    graph = import_graph("module")
    graph["kidata.compare.runs"].add("kidata.compare.summary")  # compare() once imported the summary lazily
    assert find_circle(graph) is not None


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

    for name in ("model", "loader", "training", "pipelines", "sources", "eval", "policy"):
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
