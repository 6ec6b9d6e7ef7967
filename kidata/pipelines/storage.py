"""Where a build writes: any fsspec URL (local folder, s3://, gs://, memory://), written atomically."""

from __future__ import annotations


def output_fs(out: str):
    import fsspec

    fs, root = fsspec.core.url_to_fs(out)
    return fs, root.rstrip("/")


def write_text(fs, path: str, text: str) -> None:
    """Atomic small-file write: temporary name, then rename."""
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path + ".tmp", "w") as handle:
        handle.write(text)
    fs.mv(path + ".tmp", path)
