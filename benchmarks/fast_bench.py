"""FAST encode/decode speed against the reference algorithm, chunk by chunk, in the same run.

    RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/fast_bench.py [--chunks 4096]

Uses the FAST+ files from ../shared/reference when present (else a tokenizer fitted here on
generated chunks), 4096 generated (50, 14) chunks, checks that both sides return identical ids and
actions, and prints each figure next to its baseline and goal. Parallel encode in a process pool
follows, next to the machine's ceiling. Record results on its topic page in docs/results/.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from kidata.sources.synthetic import action_chunks  # noqa: E402
from kidata.tokenizers.fast import FastTokenizer  # noqa: E402
from kidata.tokenizers.reference import reference_decode, reference_encode  # noqa: E402

FAST_PLUS = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "fast_universal"


def best_of(repeats: int, function):
    """Best wall time of ``repeats`` runs (the least disturbed by the rest of the machine)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; best of each")
    args = parser.parse_args()
    horizon, dim = 50, 14
    chunks = action_chunks(args.chunks, horizon, dim, seed=0)
    if FAST_PLUS.is_dir():
        tokenizer, name = FastTokenizer.load(FAST_PLUS), "FAST+ (universal, vocab 2048)"
    else:
        tokenizer = FastTokenizer.fit(action_chunks(20_000, horizon, dim, seed=1), vocab_size=1024)
        name = "fitted here (vocab 1024)"
    hf = tokenizer._hf
    scale, min_token = tokenizer.scale, tokenizer.min_token
    print(f"kidata FAST benchmark, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"tokenizer: {name}; backend {tokenizer.backend}; {args.chunks} chunks of ({horizon}, {dim}); "
          f"RAYON_NUM_THREADS={os.environ['RAYON_NUM_THREADS']} OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")

    base_encode = lambda: [reference_encode(hf, c, scale=scale, min_token=min_token) for c in chunks]  # noqa: E731
    ours_encode = lambda: tokenizer.encode(chunks)  # noqa: E731
    base_ids, ours_ids = base_encode(), ours_encode()
    assert [a.tolist() for a in ours_ids] == base_ids, "encode outputs differ"
    base_decode = lambda: np.stack([  # noqa: E731
        reference_decode(hf, ids, scale=scale, min_token=min_token, horizon=horizon, dim=dim) for ids in base_ids
    ])
    ours_decode = lambda: tokenizer.decode(ours_ids, horizon=horizon, dim=dim)  # noqa: E731
    base_actions, (ours_actions, ok) = base_decode(), ours_decode()
    assert ok.all() and np.abs(ours_actions - base_actions).max() <= 1e-9, "decode outputs differ"
    # Rounds alternate baseline and ours so that a noisy neighbour slows both alike.
    timings = {name: [] for name in ("base_encode", "ours_encode", "base_decode", "ours_decode")}
    for _ in range(args.repeats):
        for name, function in (("base_encode", base_encode), ("ours_encode", ours_encode),
                               ("base_decode", base_decode), ("ours_decode", ours_decode)):
            timings[name].append(best_of(1, function)[0])
    base_encode_s, ours_encode_s = min(timings["base_encode"]), min(timings["ours_encode"])
    base_decode_s, ours_decode_s = min(timings["base_decode"]), min(timings["ours_decode"])
    mean_tokens = np.mean([len(i) for i in ours_ids])
    print(f"tokens per chunk: {mean_tokens:.1f}; outputs identical (ids equal, actions within 1e-9)")
    print(f"{'':8}{'reference loop':>16}{'kidata':>12}{'speed-up':>10}{'goal':>7}")
    for label, base, ours, goal in (
        ("encode", base_encode_s, ours_encode_s, 2.5),
        ("decode", base_decode_s, ours_decode_s, 5.0),
    ):
        per_chunk_base = base / args.chunks * 1e6
        per_chunk_ours = ours / args.chunks * 1e6
        speedup = base / ours
        verdict = "met" if speedup >= goal else "MISSED"
        print(f"{label:8}{per_chunk_base:13.1f} us{per_chunk_ours:9.1f} us{speedup:9.2f}x{goal:6.1f}x  {verdict}")

    # Parallel encode: builds run one tokenizer per worker process. Compare a process pool with
    # the machine's own ceiling, the same work in independent processes that share nothing.
    cpus = os.cpu_count() or 1
    large = np.concatenate([chunks] * 4)
    single_s = min(best_of(1, lambda: tokenizer.encode(large))[0] for _ in range(args.repeats))
    context = multiprocessing.get_context("spawn")
    with context.Pool(cpus, initializer=_worker_init, initargs=(str(FAST_PLUS),)) as pool:
        pool.map(_worker_encode, np.array_split(large[:cpus], cpus))  # warm the workers
        pool_s = min(
            best_of(1, lambda: pool.map(_worker_encode, np.array_split(large, cpus * 8)))[0]
            for _ in range(args.repeats)
        )
    with context.Pool(cpus, initializer=_worker_init, initargs=(str(FAST_PLUS),)) as pool:
        alone = pool.map(_worker_time_alone, [(len(large) // cpus, args.repeats)] * cpus)
    ceiling = (single_s / len(large)) / (max(alone) / (len(large) // cpus)) * cpus
    print(f"\nparallel encode of {len(large)} chunks on {cpus} cpus:")
    print(f"  1 process:            {len(large) / single_s:9.0f} chunks/s")
    print(f"  pool of {cpus} processes:  {len(large) / pool_s:9.0f} chunks/s  "
          f"({single_s / pool_s:.2f}x; machine ceiling {ceiling:.2f}x = {cpus} independent processes)")


_WORKER: dict[str, FastTokenizer] = {}


def _worker_init(path: str) -> None:
    _WORKER["tokenizer"] = FastTokenizer.load(path) if Path(path).is_dir() else FastTokenizer.fit(
        action_chunks(20_000, 50, 14, seed=1), vocab_size=1024
    )


def _worker_encode(chunks: np.ndarray) -> list[np.ndarray]:
    return _WORKER["tokenizer"].encode(chunks)


def _worker_time_alone(job: tuple[int, int]) -> float:
    count, repeats = job
    chunks = action_chunks(count, 50, 14, seed=0)
    return min(best_of(1, lambda: _WORKER["tokenizer"].encode(chunks))[0] for _ in range(repeats))


if __name__ == "__main__":
    main()
