"""The shard reader: kidata's own tar parser and .npy loader agree with tarfile and numpy."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from kidata.pipelines.shards import iter_shard, load_npy, npy_bytes


def tar_of(members: list[tuple[str, bytes]], fmt: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_members_group_into_samples_in_every_tar_dialect(fmt):
    long_key = "episode-" + "x" * 120 if fmt != tarfile.USTAR_FORMAT else "episode-b"
    members = [("a_000000.tokens.npy", b"1" * 700), ("a_000000.meta.json", b"{}"), (f"{long_key}.base_0.jpg", b"")]
    assert list(iter_shard(tar_of(members, fmt))) == [("a_000000", {"tokens.npy": b"1" * 700, "meta.json": b"{}"}),
                                                      (long_key, {"base_0.jpg": b""})]


def test_truncated_and_corrupt_tars_are_errors():
    data = tar_of([("a_0.tokens.npy", b"1" * 700)], tarfile.PAX_FORMAT)
    with pytest.raises(ValueError, match="truncated"):
        list(iter_shard(data[:900]))
    corrupt = bytearray(data)
    corrupt[10] ^= 0xFF
    with pytest.raises(ValueError, match="checksum"):
        list(iter_shard(bytes(corrupt)))


def test_a_member_size_past_the_cap_is_refused_before_it_is_read():
    from kidata.pipelines.shards import MAX_MEMBER_BYTES

    info = tarfile.TarInfo("a_0.tokens.npy")
    info.size = 8 << 30  # a damaged header claiming 8 GiB, followed by a few bytes
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    with pytest.raises(ValueError, match=rf"tar member of {8 << 30} bytes exceeds the {MAX_MEMBER_BYTES >> 20} MiB"):
        list(iter_shard(bytes(header) + b"1" * 1024))


@pytest.mark.parametrize("array", [np.arange(5, dtype=np.int32), np.zeros((3, 4), bool), np.ones((2, 3, 4), np.float32),
                                   np.zeros((0, 7), np.float32), np.asfortranarray(np.arange(6.0).reshape(2, 3))])
def test_npy_round_trip_equals_numpy(array):
    loaded = load_npy(npy_bytes(array))
    expected = np.load(io.BytesIO(npy_bytes(array)))
    assert loaded.dtype == expected.dtype and loaded.shape == expected.shape and loaded.flags.writeable
    np.testing.assert_array_equal(loaded, expected)


def test_object_arrays_are_refused():
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="no pickle"):
        load_npy(buffer.getvalue())


def test_written_shards_are_standard_tars_with_fixed_metadata():
    import fsspec
    import webdataset as wds

    from kidata.pipelines.shards import ShardWriter

    fs = fsspec.filesystem("memory")
    writer = ShardWriter(fs, "/shards", "src-train", "train", target_bytes=10**9)
    long_key = "episode-" + "y" * 120
    writer.write("a_000000", {"tokens.npy": b"abc", "base_0.jpg": b"x" * 1000})
    writer.write(long_key, {"meta.json": b"{}"})
    info = writer.close()[0]
    data = fs.cat_file(f"/shards/{info.path}")
    assert len(data) % 10240 == 0 and info.samples == 2
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == ["a_000000.base_0.jpg", "a_000000.tokens.npy", f"{long_key}.meta.json"]
        assert {(m.mode, m.uname, m.gname, m.mtime) for m in members} == {(0o444, "kidata", "kidata", 0)}
        assert archive.extractfile(members[1]).read() == b"abc"
    fs.pipe_file("/copy.tar", data)
    local = io.BytesIO(data)
    samples = list(wds.tariterators.group_by_keys(wds.tariterators.tar_file_expander([{"stream": local, "url": "x"}])))
    assert [(s["__key__"], sorted(k for k in s if not k.startswith("__"))) for s in samples] == [
        ("a_000000", ["base_0.jpg", "tokens.npy"]), (long_key, ["meta.json"])]


@pytest.mark.parametrize("array", [np.arange(5, dtype=np.int32), np.zeros((3, 4), bool), np.ones((2, 3, 4), np.float32),
                                   np.zeros((0, 7), np.float32), np.array(2.0), np.array(["ab"])])
def test_npy_bytes_equal_numpy_save(array):
    reference = io.BytesIO()
    np.save(reference, np.ascontiguousarray(array), allow_pickle=False)
    assert npy_bytes(array) == reference.getvalue()
