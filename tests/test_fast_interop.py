"""A tokenizer kidata fits loads in the tools that load FAST today: transformers' AutoProcessor
with the processor module written beside it gives kidata's ids and actions."""

from __future__ import annotations

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")

from kidata.sources.synthetic import action_chunks  # noqa: E402
from kidata.tokenizers.fast import FastTokenizer  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    fitted = FastTokenizer.fit(action_chunks(1500, 10, 7, seed=1), vocab_size=512, scale=10.0)
    return fitted, fitted.save(tmp_path_factory.mktemp("fast") / "my-robot")


def test_autoprocessor_loads_a_kidata_tokenizer_and_encodes_the_same_ids(saved):
    fitted, directory = saved
    processor = transformers.AutoProcessor.from_pretrained(str(directory), trust_remote_code=True)
    held_out = action_chunks(64, 10, 7, seed=9)
    ids = processor(held_out)
    assert [list(map(int, row)) for row in ids] == [row.tolist() for row in fitted.encode(held_out)]
    decoded = processor.decode(ids, time_horizon=10, action_dim=7)
    ours, ok = fitted.decode(fitted.encode(held_out), horizon=10, dim=7)
    assert ok.all()
    np.testing.assert_allclose(decoded, ours, atol=1e-9)


def test_the_loader_hints_do_not_change_the_tokenizers_identity(saved):
    fitted, directory = saved
    again = FastTokenizer.load(directory)
    assert again.sha256 == fitted.sha256 and (directory / "processing_action_tokenizer.py").exists()
