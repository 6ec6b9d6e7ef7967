"""A policy behind ``kidata serve`` (or any openpi-protocol server) as an in-process policy: the
Meta-World evaluator runs against it like against ``kidata.policy.load``."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from kidata.serving.protocol import packb, unpackb
from kidata.training.config import PolicyConfig


class RemotePolicy:
    """``sample_actions(observation)`` over a websocket: kidata's observation layout is sent (the
    server must use ``--keys kidata``); the server's metadata is ``self.metadata``."""

    needs_images = True

    def __init__(self, uri: str, *, api_key: str | None = None, timeout_s: float = 120.0) -> None:
        """``timeout_s``: how long to wait for the metadata and each reply (an inference on a CPU
        takes well under a second; a server that never answers ends the evaluation, named)."""
        import contextlib

        from websockets.sync.client import connect

        headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
        self.uri, self.timeout_s = uri, timeout_s
        self._exit = contextlib.ExitStack()
        self._connection = self._exit.enter_context(
            connect(uri, compression=None, max_size=None, additional_headers=headers, open_timeout=timeout_s))
        self.metadata = unpackb(self._receive("its metadata"))

    @property
    def settings(self) -> PolicyConfig:
        """The served run's ``[policy]`` as its metadata tells (``kidata serve`` sends the action head,
        replan and temporal ensemble; what another openpi server leaves out keeps a run's default):
        the evaluators execute its chunks as they would the run's (``Chunking.of``)."""
        told = {key: self.metadata[key] for key in ("action_head", "replan", "temporal_ensemble") if key in self.metadata}
        return PolicyConfig(**told)

    def _receive(self, what: str) -> bytes | str:
        try:
            return self._connection.recv(timeout=self.timeout_s)
        except TimeoutError:
            raise TimeoutError(f"{self.uri} sent no {what} within {self.timeout_s:g} s: is the server stuck or "
                               "overloaded? (RemotePolicy(..., timeout_s=...) waits longer)") from None

    def sample_actions(self, observation: Mapping[str, Any], *, noise: Any = None) -> np.ndarray:
        request = {"images": dict(observation["images"]),  # None marks a camera the robot lacks
                   "state": np.asarray(observation["state"], dtype=np.float64), "prompt": observation["prompt"]}
        if noise is not None:
            request["noise"] = np.asarray(noise, dtype=np.float32)
        self._connection.send(packb(request))
        reply = self._receive("reply")
        if isinstance(reply, str):
            raise RuntimeError(reply)
        return unpackb(reply)["actions"]

    def close(self) -> None:
        self._exit.close()
