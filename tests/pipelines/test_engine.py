"""The local engine: results in job order, one retry, and the cost it reports (job seconds and
per-worker peak RSS, measured inside the worker processes)."""

from __future__ import annotations

import os

from kidata.pipelines.engine import JobTimes, count, run_jobs


def _pid_of(value: int) -> tuple[int, int]:
    count("items", value)
    return value, os.getpid()


def _fails_on_three(value: int) -> int:
    if value == 3:
        raise ValueError("three is refused")
    return value * 10


def _fails_once(marker: str, value: int) -> int:
    """Fails the first time it runs for ``marker`` (a file, so a retry in another process sees it)."""
    from pathlib import Path

    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise OSError("a transient failure")
    return value * 10


def test_a_job_that_fails_once_is_retried_counted_and_succeeds(tmp_path):
    for workers in (1, 2):
        times = JobTimes()
        jobs = [((str(tmp_path / f"w{workers}-{v}"), v), f"unit:{v}") for v in range(3)]
        (tmp_path / f"w{workers}-0").write_text("already failed")  # job 0 succeeds at once
        results, failures = run_jobs(_fails_once, jobs, workers=workers, progress=False, times=times)
        assert results == [0, 10, 20] and failures == []
        assert times.retries == 2 and times.jobs == 3 and times.as_dict()["retries"] == 2


def test_a_job_that_fails_twice_is_reported_after_one_retry():
    times = JobTimes()
    _, failures = run_jobs(_fails_on_three, [((3,), "unit:3")], progress=False, times=times)
    assert failures == [("unit:3", "ValueError: three is refused")] and times.retries == 1 and times.jobs == 0


def test_in_process_results_come_in_job_order_and_failures_are_named():
    times = JobTimes()
    results, failures = run_jobs(_fails_on_three, [((v,), f"unit:{v}") for v in range(5)], progress=False, times=times)
    assert results == [0, 10, 20, None, 40]
    assert failures == [("unit:3", "ValueError: three is refused")]
    assert times.jobs == 4 and list(times.peak_rss_mib) == [os.getpid()]


def test_pool_times_are_measured_inside_the_worker_processes():
    times = JobTimes()
    results, failures = run_jobs(_pid_of, [((v,), f"unit:{v}") for v in range(6)], workers=2, progress=False, times=times)
    assert failures == [] and [value for value, _ in results] == list(range(6))
    worker_pids = {pid for _, pid in results}
    assert os.getpid() not in worker_pids and set(times.peak_rss_mib) == worker_pids
    assert times.jobs == 6 and 0 < times.job_seconds <= times.wall_seconds * len(worker_pids)
    assert all(rss > 10 for rss in times.peak_rss_mib.values())  # a Python interpreter's resident pages
    summary = times.as_dict()
    assert summary["jobs"] == 6 and summary["workers"] == len(worker_pids)
    assert summary["items"] == 0 + 1 + 2 + 3 + 4 + 5  # counters are per job, summed over jobs



_CYCLE_AT_EXIT = """
import gc, sys, types
from kidata.pipelines.engine import exit_without_final_collection
class Cycle:
    def __del__(self):
        print("collected")
gc.disable()  # so that only the interpreter's final collection could find it
cycle = Cycle(); cycle.itself = cycle; del cycle
if sys.argv[1] != "normal":
    exit_without_final_collection()
if sys.argv[1] == "quick, with tensorflow":
    sys.modules["tensorflow"] = types.ModuleType("tensorflow")  # stands in for the real import
"""


def test_a_quick_exit_leaves_cyclic_garbage_to_the_os_once_tensorflow_is_loaded():
    import subprocess
    import sys

    def run(mode: str) -> str:
        return subprocess.run([sys.executable, "-c", _CYCLE_AT_EXIT, mode], capture_output=True, text=True,
                              check=True).stdout.strip()

    assert run("normal") == "collected"
    assert run("quick, with tensorflow") == ""
    assert run("quick, without tensorflow") == "collected"
