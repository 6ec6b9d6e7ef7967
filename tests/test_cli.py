"""The kidata command line: fast fit / fast report on chunk files of different shapes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from kidata.cli import main
from kidata.sources.synthetic import action_chunks
from kidata.tokenizers.fast import FastTokenizer


def test_help_lists_the_subcommands():
    result = subprocess.run(
        [sys.executable, "-m", "kidata.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("fast", "demo"):
        assert command in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "kidata.cli", "fast", "--help"], capture_output=True, text=True, check=True
    )
    assert "fit" in result.stdout and "report" in result.stdout


@pytest.mark.parametrize("shape", [(50, 8), (16, 14)])
def test_fast_fit_writes_a_loadable_tokenizer_and_its_report(tmp_path, capsys, shape):
    horizon, dim = shape
    chunk_file = tmp_path / "chunks.npy"
    np.save(chunk_file, action_chunks(1500, horizon, dim, seed=2))
    out = tmp_path / "tok"
    assert main(["fast", "fit", "--chunks", str(chunk_file), "--vocab-size", "400", "--scale", "10",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "tokens per chunk" in printed and "compression vs naive" in printed
    tokenizer = FastTokenizer.load(out)
    assert (tokenizer.time_horizon, tokenizer.action_dim, tokenizer.vocab_size) == (horizon, dim, 400)
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["chunks"] == 1500 and len(report["rmse_per_dim"]) == dim
    assert report["clipped_values"] == 0 and report["decode_failures"] == 0
    assert report["tokens_mean"] < horizon * dim
    assert sum(report["token_count_histogram"].values()) == 1500
    for png in ("token_histogram.png", "reconstruction_error.png"):
        assert (out / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fast_report_on_the_universal_tokenizer(fast_plus_dir, tmp_path, capsys):
    chunk_file = tmp_path / "chunks.npy"
    chunks = action_chunks(300, 10, 7, seed=4)
    chunks[1, :, 1] = -20.0  # DC -63.2 -> below FAST+'s min_token -35.4: clipped
    np.save(chunk_file, chunks)
    assert main(["fast", "report", str(fast_plus_dir), "--chunks", str(chunk_file),
                 "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["vocab_size"] == 2048
    assert report["clipped_values"] == 1
    assert "clipped values 1" in capsys.readouterr().out


def test_chunk_files_must_be_three_dimensional(tmp_path):
    chunk_file = tmp_path / "flat.npy"
    np.save(chunk_file, np.zeros((10, 7)))
    with pytest.raises(SystemExit, match="expected normalized chunks"):
        main(["fast", "report", "unused", "--chunks", str(chunk_file)])


def test_inspect_without_a_build_shows_example_samples_with_their_boundary(capsys):
    assert main(["inspect", "--example", "vqa", "robot", "--horizon", "4", "--action-dim", "3"]) == 0
    out = capsys.readouterr().out
    assert "what color is the cup" in out and "blue" in out and "pick up the red block" in out
    assert out.count("||") >= 2  # each sample shows where the prefix ends


def test_fetch_images_exits_1_when_any_image_failed(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image_url": ["file:///etc/hostname"], "image_sha256": [None]}), tmp_path / "p.parquet")
    code = main(["fetch-images", "--parquet", str(tmp_path / "p.parquet"), "--mirror", str(tmp_path / "mirror"),
                 "--quiet"])
    assert code == 1 and "refused_scheme" in (tmp_path / "mirror" / "fetch_report.json").read_text()
