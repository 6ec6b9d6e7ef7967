"""``kidata fetch-images``: fill a PixMo image mirror from the URLs in its parquet files.

Concurrent (a thread pool: downloads wait on the network), resumable (images already in the
mirror with the right content are skipped), verified (a download whose sha256 differs from the
row's is kept out), atomic (written to a temporary name, then renamed), with a JSON report of
every failure by reason. A parquet file is data from elsewhere, so its URLs reach only what
``kidata.sources.safe_http`` allows: http(s) on every hop, public addresses only (no loopback,
private, link-local or metadata address, checked after DNS on every redirect), one deadline for
the whole request; a body is read up to ``max_bytes`` and stored only if it decodes as an image.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from kidata.sources.pixmo import image_key, read_parquet_rows


@dataclass
class FetchReport:
    fetched: int = 0
    present: int = 0
    failures: dict[str, list[str]] = field(default_factory=dict)  # reason -> urls

    @property
    def failed(self) -> int:
        return sum(map(len, self.failures.values()))

    def to_json(self) -> dict:
        return {"fetched": self.fetched, "already_present": self.present, "failed": self.failed,
                "failures_by_reason": {k: len(v) for k, v in sorted(self.failures.items())},
                "failures": self.failures}


def _verified(path: Path, sha256: str | None) -> bool:
    return path.is_file() and (not sha256 or hashlib.sha256(path.read_bytes()).hexdigest() == sha256.lower())


MAX_IMAGE_BYTES = 64 << 20  # far above any PixMo image (the largest seen are a few MiB)


def _fetch_one(url: str, sha256: str | None, mirror: Path, timeout: float, max_bytes: int = MAX_IMAGE_BYTES, *,
               allowed: Sequence[str] = ()) -> str:
    """'present', 'fetched', or a failure reason."""
    from kidata.sources.safe_http import ALLOWED_SCHEMES, FetchRefused, get

    if urllib.parse.urlsplit(url).scheme.lower() not in ALLOWED_SCHEMES:
        return "refused_scheme"
    target = mirror / image_key(url, sha256)
    if _verified(target, sha256):
        return "present"
    try:
        data = get(url, timeout=timeout, max_bytes=max_bytes, allowed=allowed)
    except FetchRefused as refused:
        return refused.reason
    except Exception as error:  # noqa: BLE001 - every network failure is reported, none stops the run
        return f"download_error:{type(error).__name__}"
    if sha256 and hashlib.sha256(data).hexdigest() != sha256.lower():
        return "sha256_mismatch"
    if not _decodes(data):
        return "not_an_image"
    temporary = target.with_name(target.name + ".part")
    temporary.write_bytes(data)
    temporary.replace(target)
    return "fetched"


def _decodes(data: bytes) -> bool:
    """Whether the bytes are an image PIL decodes whole (an HTML error page, a truncated file or a
    decompression bomb is not stored as an image)."""
    import io
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.load()
        return True
    except Exception:  # noqa: BLE001 - whatever PIL refuses is not an image for the mirror
        return False


def fetch_images(parquet: Sequence[str | Path], mirror: str | Path, *, workers: int = 16, timeout: float = 30.0,
                 progress: bool = True, allowed: Sequence[str] = ()) -> FetchReport:
    """Downloads every row's image into ``mirror``; ``allowed`` names networks (``10.0.0.0/8``,
    ``127.0.0.1``) that may be reached although not public (a mirror on the caller's network)."""
    from kidata.progress import bar
    from kidata.sources.safe_http import allowed_networks

    allowed_networks(allowed)  # a mistyped network is one refusal here, not a failure per image
    mirror = Path(mirror)
    mirror.mkdir(parents=True, exist_ok=True)
    rows = read_parquet_rows(parquet, ("image_url",))
    # one job per URL; a URL listed with and without a checksum keeps the checksum
    by_url: dict[str, str | None] = {}
    for row in rows:
        by_url[row["image_url"]] = by_url.get(row["image_url"]) or row.get("image_sha256")
    jobs = sorted(by_url.items())
    report = FetchReport()
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda job: (job[0], _fetch_one(job[0], job[1], mirror, timeout, allowed=allowed)), jobs)
        for url, outcome in bar(results, total=len(jobs), desc="fetch images", unit="img", disable=not progress):
            if outcome == "present":
                report.present += 1
            elif outcome == "fetched":
                report.fetched += 1
            else:
                report.failures.setdefault(outcome, []).append(url)
    return report


def write_report(report: FetchReport, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report.to_json(), indent=2) + "\n")


def summarize(report: FetchReport) -> str:
    reasons = Counter({k: len(v) for k, v in report.failures.items()})
    return (f"fetched {report.fetched}, already present {report.present}, failed {report.failed}"
            + (f" ({dict(reasons)})" if reasons else ""))
