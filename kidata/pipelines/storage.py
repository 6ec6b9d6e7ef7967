"""Where a build writes: any fsspec URL (local folder, s3://, gs://, memory://), written atomically."""

from __future__ import annotations


def output_fs(out: str):
    import fsspec

    fs, root = fsspec.core.url_to_fs(out)
    return fs, root.rstrip("/")


def not_a_build_folder(fs, root: str, out: str) -> str | None:
    """Why ``out`` cannot hold a build, when it is a file (a recipe passed where its build's folder goes)."""
    if not fs.isfile(root):
        return None
    hint = f"build it first (kidata build {out} --out OUT) and pass OUT" if out.endswith(".toml") else \
        "pass the folder kidata build --out wrote"
    return f"{out} is a file, not a build's output folder: {hint}"


def write_text(fs, path: str, text: str) -> None:
    """Atomic small-file write: temporary name, then rename."""
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path + ".tmp", "w") as handle:
        handle.write(text)
    fs.mv(path + ".tmp", path)
