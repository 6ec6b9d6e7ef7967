"""``kidata fetch-images``: fill a PixMo image mirror from the URLs in its parquet files.

Concurrent (a thread pool: downloads wait on the network), resumable (images already in the
mirror with the right content are skipped), verified (a download whose sha256 differs from the
row's is kept out), atomic (written to a temporary name, then renamed), with a JSON report of
every failure by reason.
"""

from __future__ import annotations

import hashlib
import json
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


def _fetch_one(url: str, sha256: str | None, mirror: Path, timeout: float) -> str:
    """'present', 'fetched', or a failure reason."""
    target = mirror / image_key(url, sha256)
    if _verified(target, sha256):
        return "present"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - user-given dataset URLs
            data = response.read()
    except Exception as error:  # noqa: BLE001 - every network failure is reported, none stops the run
        return f"download_error:{type(error).__name__}"
    if sha256 and hashlib.sha256(data).hexdigest() != sha256.lower():
        return "sha256_mismatch"
    temporary = target.with_name(target.name + ".part")
    temporary.write_bytes(data)
    temporary.replace(target)
    return "fetched"


def fetch_images(parquet: Sequence[str | Path], mirror: str | Path, *, workers: int = 16, timeout: float = 30.0,
                 progress: bool = True) -> FetchReport:
    from tqdm import tqdm

    mirror = Path(mirror)
    mirror.mkdir(parents=True, exist_ok=True)
    rows = read_parquet_rows(parquet, ("image_url",))
    jobs = sorted({(row["image_url"], row.get("image_sha256")) for row in rows})
    report = FetchReport()
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda job: (job[0], _fetch_one(job[0], job[1], mirror, timeout)), jobs)
        for url, outcome in tqdm(results, total=len(jobs), desc="fetch images", unit="img", disable=not progress):
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
