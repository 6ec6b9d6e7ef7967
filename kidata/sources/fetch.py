"""``kidata fetch-images``: fill a PixMo image mirror from the URLs in its parquet files.

Concurrent (a thread pool: downloads wait on the network), resumable (images already in the
mirror with the right content are skipped), verified (a download whose sha256 differs from the
row's is kept out), atomic (written to a temporary name, then renamed), with a JSON report of
every failure by reason. Only http(s) URLs are opened (a parquet file is data from elsewhere: a
``file://`` row would copy local files into the mirror), an image is read up to ``max_bytes``,
and ``timeout`` bounds each download as a whole, not just each socket read.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
import urllib.request
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
ALLOWED_SCHEMES = ("http", "https")


def _fetch_one(url: str, sha256: str | None, mirror: Path, timeout: float, max_bytes: int = MAX_IMAGE_BYTES) -> str:
    """'present', 'fetched', or a failure reason."""
    if urllib.parse.urlsplit(url).scheme.lower() not in ALLOWED_SCHEMES:
        return "refused_scheme"
    target = mirror / image_key(url, sha256)
    if _verified(target, sha256):
        return "present"
    deadline = time.monotonic() + timeout
    chunks, size = [], 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http(s) only, checked above
            while True:
                if time.monotonic() > deadline:
                    return "download_error:timeout"
                chunk = response.read(1 << 16)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    return "too_large"
                chunks.append(chunk)
    except Exception as error:  # noqa: BLE001 - every network failure is reported, none stops the run
        return f"download_error:{type(error).__name__}"
    data = b"".join(chunks)
    if sha256 and hashlib.sha256(data).hexdigest() != sha256.lower():
        return "sha256_mismatch"
    temporary = target.with_name(target.name + ".part")
    temporary.write_bytes(data)
    temporary.replace(target)
    return "fetched"


def fetch_images(parquet: Sequence[str | Path], mirror: str | Path, *, workers: int = 16, timeout: float = 30.0,
                 progress: bool = True) -> FetchReport:
    from kidata.progress import bar

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
        results = pool.map(lambda job: (job[0], _fetch_one(job[0], job[1], mirror, timeout)), jobs)
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
