"""Engines map independent work units onto workers: ``local`` (a process pool, or in-process for
one worker) and ``ray`` (the same functions as Ray tasks on an existing cluster).

Each job is retried once; a job that fails twice is reported with its error and the others run
on, so completed units stay in place for a resume.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import traceback
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterator, Sequence

ENGINES = ("local", "ray")
_SHARED_POOL: dict[int, ProcessPoolExecutor] = {}


@contextlib.contextmanager
def shared_pool(workers: int) -> Iterator[None]:
    """One local process pool for every ``run_jobs`` call inside the block (a build's two passes):
    spawned workers import their libraries (TensorFlow: seconds) once instead of once per pass."""
    if workers <= 1 or workers in _SHARED_POOL:
        yield
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    _SHARED_POOL[workers] = pool
    try:
        yield
    finally:
        del _SHARED_POOL[workers]
        pool.shutdown()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def run_jobs(
    function: Callable[..., Any],
    jobs: Sequence[tuple[tuple, str]],
    *,
    engine: str = "local",
    workers: int = 1,
    progress: bool = True,
    label: str = "units",
    ray_address: str | None = None,
) -> tuple[list[Any], list[tuple[str, str]]]:
    """Runs ``function(*args)`` for each (args, name); returns results in job order (None for a
    failed job) and the (name, error) of jobs that failed twice."""
    from tqdm import tqdm

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    results: list[Any] = [None] * len(jobs)
    failures: list[tuple[str, str]] = []
    if not jobs:
        return results, failures
    bar = tqdm(total=len(jobs), desc=label, unit="unit", disable=not progress)
    if engine == "ray":
        _run_ray(function, jobs, results, failures, bar, ray_address)
    elif workers <= 1:
        for index, (args, name) in enumerate(jobs):
            for attempt in (1, 2):
                try:
                    results[index] = function(*args)
                    break
                except Exception as error:  # noqa: BLE001 - retried once, then reported
                    if attempt == 2:
                        failures.append((name, _describe(error)))
                        traceback.print_exc()
            bar.update(1)
    else:
        shared = _SHARED_POOL.get(workers)
        with contextlib.nullcontext(shared) if shared else ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(function, *args): (index, args, name, 1) for index, (args, name) in enumerate(jobs)}
            while futures:
                done = next(iter(_as_completed(futures)))
                index, args, name, attempt = futures.pop(done)
                try:
                    results[index] = done.result()
                    bar.update(1)
                except Exception as error:  # noqa: BLE001
                    if attempt == 1:
                        futures[pool.submit(function, *args)] = (index, args, name, 2)
                    else:
                        failures.append((name, _describe(error)))
                        bar.update(1)
    bar.close()
    return results, failures


def _as_completed(futures):
    from concurrent.futures import FIRST_COMPLETED, wait

    done, _ = wait(list(futures), return_when=FIRST_COMPLETED)
    return done


def _run_ray(function, jobs, results, failures, bar, address) -> None:
    try:
        import ray
    except ImportError as error:  # pragma: no cover - optional extra
        raise ImportError("the ray engine needs the optional extra: pip install 'kidata[ray]'") from error
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(max_retries=1, retry_exceptions=True)(function)
    pending = {remote.remote(*args): index for index, (args, _) in enumerate(jobs)}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(ready[0])
        try:
            results[index] = ray.get(ready[0])
        except Exception as error:  # noqa: BLE001
            failures.append((jobs[index][1], _describe(error)))
        bar.update(1)
