"""``[eval] metaworld``'s hook refuses, before the first training step, what its first closed-loop
evaluation would fail on: without it the run trains to its first evaluation and ends there."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow_datasets", reason="the fixture build reads RLDS")

from support.training import config  # noqa: E402

from kidata.eval.during_training import closed_loop_hook  # noqa: E402
from kidata.manifest import BuildDir  # noqa: E402
from kidata.training.trainer import train  # noqa: E402


def test_closed_loop_evaluation_of_a_mixture_without_a_metaworld_source_is_refused_before_the_run_is_touched(
        mixture, tmp_path):
    hooked = config(mixture, train={"steps": 2}, eval={"metaworld": {"tasks": ["reach"]}})
    with pytest.raises(ValueError, match=r"^\[eval\] metaworld: its first robot source 'bridge' is not a Meta-World "
                                         r"source to act in \(the mixture's sources: \['bridge', 'vqav2'\]\): train "
                                         r"on a Meta-World mixture \(kidata build demo\), or drop \[eval\] metaworld"):
        train(hooked, tmp_path / "run", closed_loop=closed_loop_hook(hooked))
    assert not (tmp_path / "run").exists()


def test_an_unknown_metaworld_task_is_refused_by_the_hook_naming_eval_metaworld(mixture):
    hooked = config(mixture, eval={"metaworld": {"tasks": ["reach", "rech"]}})
    with pytest.raises(ValueError, match=r"^\[eval\] metaworld: unknown Meta-World task 'rech' \(tasks: \['assembly'"):
        closed_loop_hook(hooked).check(hooked, BuildDir(mixture).read_manifest())
