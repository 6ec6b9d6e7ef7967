"""Engines map independent work units onto workers: ``local`` (a process pool, or in-process for
one worker) and ``ray`` (the same functions as Ray tasks on an existing cluster).

Each job is retried once; a job that fails twice is reported with its error and the others run
on, so completed units stay in place for a resume.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

ENGINES = ("local", "ray")
_SHARED_POOL: dict[int, ProcessPoolExecutor] = {}


@contextlib.contextmanager
def shared_pool(workers: int, warm_up: Callable[..., None] | None = None, warm_up_args: tuple = ()) -> Iterator[None]:
    """One local process pool for every ``run_jobs`` call inside the block (a build's two passes):
    spawned workers import their libraries (TensorFlow: seconds) once instead of once per pass.
    The workers start at once and run ``warm_up(*warm_up_args)`` (imports, opening datasets)
    while the coordinator lists units, so that cost overlaps instead of delaying the first jobs."""
    if workers <= 1 or workers in _SHARED_POOL:
        if workers <= 1 and warm_up is not None:
            _warm_up(warm_up, *warm_up_args)  # in-process: before the first job, as a pool's workers do
        yield
        return
    pool = _process_pool(workers, warm_up, warm_up_args)
    pool.submit(int)  # a spawn pool starts all its workers with the first submission
    _SHARED_POOL[workers] = pool
    try:
        yield
    except BaseException:  # Ctrl-C, SIGTERM (as KeyboardInterrupt), a failure: no worker outlives the build
        stop_pool(pool)
        raise
    else:
        pool.shutdown()
    finally:
        del _SHARED_POOL[workers]


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancels a pool's queued jobs and terminates its workers now (``shutdown`` alone would wait
    for every queued job). The worker processes are the executor's ``_processes``: no public
    handle exists."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()


class _WorkerPool(ProcessPoolExecutor):
    """A spawn pool whose workers start with Ctrl-C ignored: a terminal's SIGINT reaches the whole
    process group, and a worker still importing would print its own KeyboardInterrupt traceback
    (an ignored signal stays ignored across exec, and Python then installs no handler for it).
    The coordinator alone turns Ctrl-C into one sentence and stops the workers."""

    def _spawn_process(self):  # ProcessPoolExecutor's hook (3.9+) that starts one worker
        if threading.current_thread() is not threading.main_thread():
            return super()._spawn_process()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return super()._spawn_process()
        finally:
            signal.signal(signal.SIGINT, previous)


def _process_pool(workers: int, warm_up: Callable[..., None] | None = None, warm_up_args: tuple = ()):
    return _WorkerPool(workers, mp_context=multiprocessing.get_context("spawn"),
                       initializer=_start_worker, initargs=(os.getpid(), warm_up, *warm_up_args))


def _start_worker(coordinator: int, warm_up: Callable[..., None] | None, *args: Any) -> None:
    """Pool initializer: the worker ignores Ctrl-C (the coordinator stops it: one message, not one
    traceback per worker) and exits when its coordinator dies (kill -9 leaves no idle worker
    holding its memory); ``exit_without_final_collection``; then ``warm_up(*args)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(coordinator,), name="kidata-orphan-watch", daemon=True).start()
    exit_without_final_collection()
    if warm_up is not None:
        _warm_up(warm_up, *args)


def _exit_when_orphaned(parent: int, interval: float = 0.5) -> None:
    """Ends this worker once its coordinator ``parent`` is gone (reparented: the parent id differs;
    the coordinator's id is passed in, as it may die while this worker is still importing).
    Portable where ``prctl(PR_SET_PDEATHSIG)`` is not, and unaffected by which thread spawned it."""
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def exit_without_final_collection() -> None:
    """At this process's exit, if it imported TensorFlow, skip the interpreter's final garbage
    collections: they spend ~0.8 s walking TensorFlow's ~350k objects (a build's workers and a
    1-worker ``kidata build`` each paid that after their work was done). Only for processes whose
    outputs are all closed explicitly (pool workers, the ``kidata`` command); processes without
    TensorFlow (training) exit as usual."""
    atexit.unregister(_freeze_if_tensorflow_loaded)  # registered once, however often asked
    atexit.register(_freeze_if_tensorflow_loaded)


def _freeze_if_tensorflow_loaded() -> None:
    if "tensorflow" in sys.modules:
        gc.freeze()


def _warm_up(function: Callable[..., None], *args: Any) -> None:
    """Runs a warm-up. Never raises: a failing pool initializer breaks the whole pool, and
    whatever failed here fails again, with its real error, in the job that needs it."""
    try:
        function(*args)
    except Exception:  # noqa: BLE001
        pass


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB. On Linux from /proc's VmHWM: Linux
    carries ``ru_maxrss`` across exec, so a spawned worker (fork + exec) would report at least its
    parent's size at spawn time. Elsewhere ru_maxrss (KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # POSIX only

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@dataclass
class JobTimes:
    """What a ``run_jobs`` call cost: its wall time, the seconds spent inside the jobs (summed over
    workers: the work itself, without process start-up and imports), and each worker process's
    peak RSS. Filled by ``run_jobs(..., times=JobTimes())``; the build report is made of these."""

    wall_seconds: float = 0.0
    job_seconds: float = 0.0
    job_cpu_seconds: float = 0.0  # CPU time of the worker processes (all their threads) during jobs
    slowest_job_seconds: float = 0.0
    jobs: int = 0
    retries: int = 0  # jobs that failed once and ran again (a second failure is reported, not retried)
    peak_rss_mib: dict[int, float] = field(default_factory=dict)  # pid -> MiB
    counters: dict[str, float] = field(default_factory=dict)  # what jobs reported through ``count``

    def add(self, seconds: float, cpu_seconds: float, pid: int, rss_mib: float, counters: dict[str, float]) -> None:
        for name, amount in counters.items():
            self.counters[name] = self.counters.get(name, 0.0) + amount
        self.job_seconds += seconds
        self.job_cpu_seconds += cpu_seconds
        self.slowest_job_seconds = max(self.slowest_job_seconds, seconds)
        self.jobs += 1
        self.peak_rss_mib[pid] = max(rss_mib, self.peak_rss_mib.get(pid, 0.0))

    def as_dict(self) -> dict:
        return {"wall_seconds": round(self.wall_seconds, 3), "job_seconds": round(self.job_seconds, 3),
                "job_cpu_seconds": round(self.job_cpu_seconds, 3),
                "slowest_job_seconds": round(self.slowest_job_seconds, 3),
                "jobs": self.jobs, "retries": self.retries, "workers": len(self.peak_rss_mib),
                "worker_peak_rss_mib": round(max(self.peak_rss_mib.values(), default=0.0), 1),
                **{name: round(amount, 3) for name, amount in sorted(self.counters.items())}}


_COUNTERS: dict[str, float] = {}


def count(name: str, amount: float) -> None:
    """Adds ``amount`` to a named figure of the job running in this process; ``run_jobs`` sums
    them over jobs into its JobTimes (e.g. the seconds a build unit spent on image codecs)."""
    _COUNTERS[name] = _COUNTERS.get(name, 0.0) + amount


@contextlib.contextmanager
def counted_seconds(name: str) -> Iterator[None]:
    """Adds the block's wall seconds to the running job's counter ``name`` (see ``count``)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        count(name, time.perf_counter() - started)


def _measured(function: Callable[..., Any], *args: Any) -> tuple[Any, float, float, int, float, dict[str, float]]:
    """Runs one job where it is scheduled; returns (result, seconds, CPU seconds, pid, peak RSS in
    MiB, the job's counters)."""
    _COUNTERS.clear()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = function(*args)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return result, seconds, cpu_seconds, os.getpid(), peak_rss_mib(), dict(_COUNTERS)


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
    times: JobTimes | None = None,
) -> tuple[list[Any], list[tuple[str, str]]]:
    """Runs ``function(*args)`` for each (args, name); returns results in job order (None for a
    failed job) and the (name, error) of jobs that failed twice. ``times`` collects the cost."""
    from kidata.progress import bar as progress_bar

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    results: list[Any] = [None] * len(jobs)
    failures: list[tuple[str, str]] = []
    if not jobs:
        return results, failures
    times = times if times is not None else JobTimes()
    started = time.perf_counter()
    measured = [((function, *args), name) for args, name in jobs]
    bar = progress_bar(total=len(jobs), desc=label, unit="unit", disable=not progress)
    if engine == "ray":
        _run_ray(_measured, measured, results, failures, bar, ray_address)
    elif workers <= 1:
        for index, (args, name) in enumerate(measured):
            for attempt in (1, 2):
                try:
                    results[index] = _measured(*args)
                    break
                except Exception as error:  # noqa: BLE001 - retried once, then reported
                    if attempt == 1:
                        times.retries += 1
                    else:
                        failures.append((name, _describe(error)))  # named in the build's one-line refusal
                        if os.environ.get("KIDATA_DEBUG", "") not in ("", "0"):
                            traceback.print_exc()
            bar.update(1)
    else:
        shared = _SHARED_POOL.get(workers)
        own = None if shared else _process_pool(workers)
        try:
            _run_pool(shared or own, measured, results, failures, bar, times)
        except BaseException:
            if own is not None:
                stop_pool(own)
            raise
        finally:
            if own is not None:
                own.shutdown()
    bar.close()
    for index, outcome in enumerate(results):
        if outcome is not None:
            result, seconds, cpu_seconds, pid, rss, counters = outcome
            times.add(seconds, cpu_seconds, pid, rss, counters)
            results[index] = result
    times.wall_seconds += time.perf_counter() - started
    return results, failures


def _run_pool(pool, measured, results, failures, bar, times) -> None:
    """Runs the jobs on a process pool, each retried once; fills ``results`` and ``failures``."""
    futures = {pool.submit(_measured, *args): (index, args, name, 1) for index, (args, name) in enumerate(measured)}
    while futures:
        done = next(iter(_as_completed(futures)))
        index, args, name, attempt = futures.pop(done)
        try:
            results[index] = done.result()
            bar.update(1)
        except Exception as error:  # noqa: BLE001
            if attempt == 1:
                times.retries += 1
                futures[pool.submit(_measured, *args)] = (index, args, name, 2)
            else:
                failures.append((name, _describe(error)))
                bar.update(1)


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
