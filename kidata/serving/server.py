"""``kidata serve``: a run's policy over openpi's remote-inference protocol.

On connect the server sends the policy's metadata; each request is a msgpack-numpy observation
and each reply ``{"actions": float64 [H, A], "server_timing": {"infer_ms": ...}}``, as
``openpi_client.WebsocketClientPolicy`` expects. A request the policy cannot read (a missing key,
a mis-shaped image) is answered with an error text naming it, and the connection stays open; a
request over ``max_request_bytes`` is refused by the websocket layer before it is buffered (that
connection closes with 1009, "message too big", naming the limit; the server serves on); GET
/healthz answers 200. One model serves every client: requests are queued behind a lock, so no two
inferences interleave. Binds to 127.0.0.1 unless told otherwise; with an API key,
connections without ``Authorization: Api-Key <key>`` are refused (401).
"""

from __future__ import annotations

import http
import threading
import time
from typing import Any, Callable

import numpy as np

from kidata.serving.keymaps import KeyMap, RequestError
from kidata.serving.protocol import packb, unpackb

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024


class PolicyServer:
    """``policy``: a ``kidata.policy.Policy`` (anything with ``sample_actions(observation, noise=)``)."""

    def __init__(self, policy: Any, keys: KeyMap, *, metadata: dict | None = None, api_key: str | None = None,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
        self.policy, self.keys, self.api_key = policy, keys, api_key
        self.max_request_bytes = max_request_bytes
        self.metadata = {**(metadata or {}), "keys": keys.describe()}
        self._lock = threading.Lock()
        self._server = None

    # ------------------------------------------------------------------ one request
    def infer(self, request: dict) -> dict:
        """The reply to one decoded request (kidata's extension: an optional ``noise`` float
        [H, A] makes the draw reproducible; the policy checks it as data, like the observation)."""
        observation = self.keys.observation(request)
        noise = request.get("noise")
        began = time.perf_counter()
        with self._lock:
            actions = self.policy.sample_actions(observation, noise=noise)
        return {"actions": np.asarray(actions, dtype=np.float64),
                "server_timing": {"infer_ms": (time.perf_counter() - began) * 1000}}

    def _reply(self, message: bytes | str) -> bytes | str:
        if isinstance(message, str):
            return "kidata serve: requests are msgpack-numpy bytes, not text"
        if len(message) > self.max_request_bytes:
            return f"kidata serve: request of {len(message)} bytes exceeds the cap of {self.max_request_bytes}"
        try:
            request = unpackb(message)
            if not isinstance(request, dict):
                raise RequestError(f"a request is a map of observation keys, got {type(request).__name__}")
            return packb(self.infer(request))
        except Exception as error:  # noqa: BLE001 - answered, and the server keeps serving
            return f"kidata serve: {type(error).__name__}: {error}"

    # ------------------------------------------------------------------ the server
    def _handler(self, connection) -> None:
        from websockets.exceptions import ConnectionClosed

        connection.send(packb(self.metadata))
        while True:
            try:
                message = connection.recv()
            except ConnectionClosed:
                return
            connection.send(self._reply(message))

    def _process_request(self, connection, request):
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self.api_key and request.headers.get("Authorization") != f"Api-Key {self.api_key}":
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or wrong Authorization: Api-Key\n")
        return None

    def _open(self, host: str, port: int):
        from websockets.sync.server import serve

        # max_size: the websocket layer refuses a frame (or a fragmented message) over the cap from its
        # header, before buffering it, and closes that connection with 1009 naming both sizes; a
        # check after recv() would first hold every concurrent oversized request whole in memory
        self._server = serve(self._handler, host, port, compression=None, max_size=self.max_request_bytes,
                             process_request=self._process_request)
        return self._server

    def serve(self, host: str = "127.0.0.1", port: int = 8000, *, bound: Callable[[int], None] | None = None) -> None:
        """Serves until ``shutdown`` (or Ctrl-C). ``bound`` is called with the port once it is bound,
        so a caller announces the address only when a port in use has not been refused."""
        with self._open(host, port) as server:
            if bound is not None:
                bound(server.socket.getsockname()[1])
            server.serve_forever()

    def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serves from a background thread; returns the bound port (``port=0``: a free one)."""
        server = self._open(host, port)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server.socket.getsockname()[1]

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()


def run_metadata(policy: Any, run: str) -> dict:
    """What a client learns on connect: the run, its action chunk shape, the cameras it reads and how
    it acts ([policy]: the action head, and the replanning interval its evaluators use)."""
    from kidata import __version__

    return {"server": "kidata", "kidata_version": __version__, "run": str(run), "source": policy.source,
            "action_horizon": policy.action_horizon, "action_dim": policy.action_dim,
            "cameras": list(policy.config.data.cameras), "recipe": policy.manifest.recipe.canonical(),
            "action_head": policy.action_head, "replan": policy.settings.replan,
            "temporal_ensemble": policy.settings.temporal_ensemble}
