"""HTTP(S) GETs of URLs that come from data (a parquet file's rows): the caller names what may be
reached, never the data. Every hop, the first and each redirect, must be http or https and
resolve only to public addresses (no loopback, private, link-local - the cloud metadata service
at 169.254.169.254 among them -, shared, reserved or multicast address), unless the caller allows
that network; the connection goes to the address that was checked (a second DNS answer cannot
swap it). One deadline bounds the whole request, redirects and a server dripping bytes included.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from typing import Iterator, Sequence

ALLOWED_SCHEMES = ("http", "https")
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)


class FetchRefused(Exception):
    """A request refused or failed; ``reason`` is the report's key (``refused_address``, ...)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def allowed_networks(allowed: Sequence[str]) -> list:
    """The networks named (``10.0.0.0/8``, ``127.0.0.1``); ValueError naming one that is not."""
    networks = []
    for item in allowed:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"--allow-network {item!r} is not an address or network (e.g. 10.0.0.0/8)") from None
    return networks


def checked_address(host: str, port: int, allowed: Sequence[str] = ()) -> tuple:
    """The first resolved socket address of ``host``; FetchRefused('refused_address') when any
    address it resolves to is not public and not inside an ``allowed`` network."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise FetchRefused("download_error:gaierror", str(error)) from None
    networks = allowed_networks(allowed)
    for _, _, _, _, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if getattr(address, "ipv4_mapped", None) is not None:
            address = address.ipv4_mapped
        if any(address in network for network in networks):
            continue
        if not address.is_global or address.is_multicast:
            raise FetchRefused("refused_address", f"{host} resolves to {address}, which is not a public address")
    family, kind, protocol, _, sockaddr = infos[0]
    return family, kind, protocol, sockaddr


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to an address already checked (the Host header keeps the name)."""

    def __init__(self, host: str, port: int, address: tuple, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def _raw_socket(self) -> socket.socket:
        family, kind, protocol, sockaddr = self._address
        sock = socket.socket(family, kind, protocol)
        sock.settimeout(self.timeout)
        try:
            sock.connect(sockaddr)
        except BaseException:
            sock.close()
            raise
        return sock

    def connect(self) -> None:
        self.sock = self._raw_socket()


class _PinnedHTTPS(_PinnedHTTP):
    def connect(self) -> None:
        context = ssl.create_default_context()
        self.sock = context.wrap_socket(self._raw_socket(), server_hostname=self.host)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchRefused("download_error:timeout")
    return left


def get(url: str, *, timeout: float, max_bytes: int, allowed: Sequence[str] = ()) -> bytes:
    """The body of ``url`` (redirects followed, each hop checked), within ``timeout`` seconds in
    all and ``max_bytes``; FetchRefused naming the reason otherwise."""
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ALLOWED_SCHEMES or not parts.hostname:
            raise FetchRefused("refused_scheme", url)
        port = parts.port or (443 if scheme == "https" else 80)
        address = checked_address(parts.hostname, port, allowed)
        kind = _PinnedHTTPS if scheme == "https" else _PinnedHTTP
        connection = kind(parts.hostname, port, address, timeout=_remaining(deadline))
        # the deadline holds even while http.client reads headers byte by byte: the socket is shut at it
        alarm = threading.Timer(_remaining(deadline), _shut, (connection,))
        alarm.daemon = True
        alarm.start()
        try:
            connection.request("GET", urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, "")),
                               headers={"User-Agent": "kidata-fetch-images"})
            response = connection.getresponse()
            if response.status in _REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise FetchRefused("download_error:HTTPError", f"{response.status} without a Location")
                url = urllib.parse.urljoin(url, location)
                continue
            if response.status != 200:
                raise FetchRefused("download_error:HTTPError", f"HTTP {response.status}")
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise FetchRefused("too_large")
            return b"".join(_body(connection, response, deadline, max_bytes))
        except (OSError, http.client.HTTPException) as error:
            late = isinstance(error, TimeoutError) or time.monotonic() >= deadline
            raise FetchRefused(f"download_error:{'timeout' if late else type(error).__name__}", str(error)) from None
        finally:
            alarm.cancel()
            connection.close()
    raise FetchRefused("too_many_redirects", url)


def _shut(connection) -> None:
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _body(connection, response, deadline: float, max_bytes: int) -> Iterator[bytes]:
    """The body in pieces as they arrive (``read1``: one receive, never waiting to fill a
    buffer), each receive bounded by what is left of the deadline."""
    size = 0
    while True:
        if connection.sock is not None:
            connection.sock.settimeout(_remaining(deadline))
        chunk = response.read1(1 << 16)
        if not chunk:
            _remaining(deadline)  # a socket shut at the deadline reads as the end of the body
            if response.length:  # http.client counts down a Content-Length: bytes are missing
                raise http.client.IncompleteRead(b"", response.length)
            return
        _remaining(deadline)
        size += len(chunk)
        if size > max_bytes:
            raise FetchRefused("too_large")
        yield chunk
