"""The server's memory under oversized requests: N clients each send one frame of SIZE MiB at once
to a ``kidata serve`` whose cap is 64 MiB; the server process's resident set is read from /proc
before and after. ``--uncapped`` serves with the websocket layer's frame cap off (the check after
``recv()`` only), for comparison.

    python benchmarks/serve_frame_memory.py [--clients 4] [--mib 200] [--uncapped]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

SERVER = r"""
import sys, time
import numpy as np
import kidata.serving.server as server_module
from kidata.serving.keymaps import PRESETS
if sys.argv[1] == "uncapped":
    from websockets.sync import server as ws
    real = ws.serve
    server_module_serve = lambda *a, **k: real(*a, **{**k, "max_size": None})
    import websockets.sync.server
    websockets.sync.server.serve = server_module_serve
class Still:
    def sample_actions(self, observation, noise=None):
        return np.zeros((4, 7))
server = server_module.PolicyServer(Still(), PRESETS["kidata"])
print(server.start("127.0.0.1", 0), flush=True)
time.sleep(3600)
"""


def rss_mib(pid: int) -> dict[str, float]:
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(("VmRSS:", "VmHWM:")):
            fields[line.split(":")[0]] = int(line.split()[1]) / 1024
    return fields


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--uncapped", action="store_true")
    args = parser.parse_args()
    from websockets.sync.client import connect

    process = subprocess.Popen([sys.executable, "-c", SERVER, "uncapped" if args.uncapped else "capped"],
                               stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        before = rss_mib(process.pid)
        frame = b"\0" * (args.mib << 20)
        outcomes = []

        def send() -> None:
            try:
                with connect(f"ws://127.0.0.1:{port}", max_size=None, open_timeout=60) as socket:
                    socket.recv(timeout=60)  # metadata
                    socket.send(frame)
                    outcomes.append(str(socket.recv(timeout=120))[:60])
            except Exception as error:  # noqa: BLE001 - the refusal is the outcome measured
                outcomes.append(f"{type(error).__name__}: {str(error)[:80]}")

        threads = [threading.Thread(target=send) for _ in range(args.clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        time.sleep(1.0)
        after = rss_mib(process.pid)
        print(json.dumps({"clients": args.clients, "frame_mib": args.mib, "uncapped": args.uncapped,
                          "rss_before_mib": round(before["VmRSS"], 1), "rss_after_mib": round(after["VmRSS"], 1),
                          "peak_rss_mib": round(after["VmHWM"], 1), "seconds": round(seconds, 2),
                          "outcomes": sorted(set(outcomes))}, indent=2))
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    main()
