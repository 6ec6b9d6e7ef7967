"""Frames of one episode from an mp4 span, decoded with PyAV in step order.

Why PyAV: its wheels carry their own FFmpeg (AV1 through libdav1d included), so reading LeRobot
videos needs nothing from the system; torchcodec needs the system's FFmpeg shared libraries, which
``make test`` / ``make demo`` cannot install on a user's machine (docs/results/lerobot.md
reader, has the throughput of both paths). A LeRobot v3.0 mp4 holds many episodes one after
another, so an episode's frames start with a seek to the keyframe before its first timestamp,
never with a decode from the file's start.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kidata.schema import Frames


class VideoError(ValueError):
    """A video does not hold the frames its metadata promises (missing, truncated, off the grid)."""


MAX_FRAME_PIXELS = 8192 * 8192  # a frame's size is read from the file's header: bounded before any decode


def check_frame_size(path: str, stream) -> None:
    """Refuses a video stream whose header declares frames past ``MAX_FRAME_PIXELS`` (or none)."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if not 0 < width * height <= MAX_FRAME_PIXELS:
        raise VideoError(f"{path}: the stream declares {width}x{height} frames; kidata decodes frames of 1 to "
                         f"{MAX_FRAME_PIXELS} pixels")


def packet_times(path: str, start: float, stop: float, tolerance_s: float) -> np.ndarray:
    """Presentation times (seconds, sorted) of the packets in [start - tol, stop - tol): what the
    file holds for a span, read by demuxing after a seek (no decoding). Raises ``VideoError`` when
    the file cannot be opened or demuxed."""
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            base = float(stream.time_base)
            container.seek(int(max(start - tolerance_s, 0.0) / base), stream=stream, backward=True, any_frame=False)
            times = []
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                time = packet.pts * base
                if time >= stop + 1.0:  # past the span by more than any B-frame reordering
                    break
                if start - tolerance_s <= time < stop - tolerance_s:
                    times.append(time)
    except (av.error.FFmpegError, IndexError, OSError) as error:
        raise VideoError(f"{path}: cannot read the video ({error})") from error
    return np.array(sorted(times), dtype=np.float64)


class VideoFrames(Frames):
    """One camera's frames [T] of one episode, decoded on access (the ``Frames`` interface).

    ``timestamps`` (float64 [T]) are the frames' times in the file, seconds. Access in increasing
    step order decodes each frame once; a step before the current one seeks again.
    """

    def __init__(self, path: str, timestamps: np.ndarray, *, tolerance_s: float = 1e-4) -> None:  # noqa: D107
        # Frames' own storage (bytes or an array) is replaced by the file span: no super().__init__
        self.rotate_180 = False
        self.path = path
        self.timestamps = np.asarray(timestamps, dtype=np.float64)
        self.tolerance_s = float(tolerance_s)
        self._container: Any = None
        self._decoded: Any = None
        self._pending: Any = None  # the last decoded frame not yet passed: (time, av.VideoFrame)
        self._step = -1

    @property
    def encoded(self) -> bool:
        return False

    def __len__(self) -> int:
        return len(self.timestamps)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_container": None, "_decoded": None, "_pending": None, "_step": -1}

    def _open(self, step: int) -> None:
        import av

        self.close()
        self._container = av.open(self.path)
        stream = self._container.streams.video[0]
        check_frame_size(self.path, stream)
        stream.thread_type = "AUTO"
        target = max(self.timestamps[step] - self.tolerance_s, 0.0)
        self._container.seek(int(target / float(stream.time_base)), stream=stream, backward=True, any_frame=False)
        self._decoded = self._container.decode(stream)

    def frame(self, step: int) -> np.ndarray:
        """uint8 [H, W, 3] RGB of one step."""
        if not 0 <= step < len(self.timestamps):
            raise IndexError(f"step {step} outside {len(self.timestamps)} frames")
        if self._decoded is None or step < self._step:
            self._open(step)
        self._step = step
        target = self.timestamps[step]
        while True:
            if self._pending is not None:
                time, frame = self._pending
                if abs(time - target) <= self.tolerance_s:
                    return frame.to_ndarray(format="rgb24")
                if time > target + self.tolerance_s:
                    raise VideoError(f"{self.path}: no frame at {target:.4f} s (the next one is at {time:.4f} s)")
            frame = next(self._decoded, None)
            if frame is None:
                raise VideoError(f"{self.path}: the video ends before {target:.4f} s")
            self._pending = (float(frame.time), frame)

    def array(self) -> np.ndarray:
        """All frames, uint8 [T, H, W, 3]."""
        return np.stack([self.frame(step) for step in range(len(self))])

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._decoded = self._pending = None
        self._step = -1
