"""fetch-images takes its URLs from data, so data must not choose what it reaches: loopback,
private, link-local and metadata addresses are refused after DNS on every redirect hop, only
http(s) is followed, one deadline bounds a whole request, and a body that is not an image is never
stored. The servers here listen on 127.0.0.1 only and stop within seconds."""

from __future__ import annotations

import http.server
import shutil
import threading
import time

import pytest

from kidata.sources.safe_http import FetchRefused, checked_address, get

pa = pytest.importorskip("pyarrow")
from support.data import shared_path  # noqa: E402


class Handler(http.server.BaseHTTPRequestHandler):
    """/secret: text; /jpeg: a real JPEG; /html: an HTML page; /to?url=X: a redirect to X;
    /drip: declares 1000 bytes and sends one every 0.2 s for at most 3 s."""

    jpeg = b""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path, _, query = self.path.partition("?")
        if path == "/to":
            self.send_response(302)
            self.send_header("Location", query.split("=", 1)[1])
            self.end_headers()
            return
        if path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            stop = time.monotonic() + 3
            while time.monotonic() < stop:
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)
            return
        body = {"/secret": b"the instance's credentials", "/jpeg": self.jpeg,
                "/html": b"<html><body>Not found</body></html>"}.get(path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")


@pytest.fixture(scope="module")
def server():
    Handler.jpeg = next(shared_path("data", "coco_detection").rglob("*.jpg")).read_bytes()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1",
                                  "100.64.0.1", "0.0.0.0", "::ffff:127.0.0.1"])
def test_a_host_that_is_not_a_public_address_is_refused_before_any_connection(host):
    with pytest.raises(FetchRefused, match="refused_address: .* is not a public address"):
        checked_address(host, 80)


def test_loopback_is_refused_unless_the_caller_allows_that_network(server):
    with pytest.raises(FetchRefused, match="refused_address"):
        get(f"{server}/secret", timeout=5, max_bytes=1 << 20)
    assert get(f"{server}/secret", timeout=5, max_bytes=1 << 20, allowed=["127.0.0.1"]) == b"the instance's credentials"


@pytest.mark.parametrize(("target", "reason"), [("http://127.0.0.2:9/secret", "refused_address"),
                                                ("http://169.254.169.254/latest/meta-data/", "refused_address"),
                                                ("ftp://example.com/image.jpg", "refused_scheme"),
                                                ("file:///etc/passwd", "refused_scheme")])
def test_every_redirect_hop_is_checked_again(server, target, reason):
    with pytest.raises(FetchRefused, match=f"^{reason}"):
        get(f"{server}/to?url={target}", timeout=5, max_bytes=1 << 20, allowed=["127.0.0.1/32"])


def test_a_server_dripping_bytes_is_stopped_by_the_whole_request_deadline(server):
    with pytest.raises(FetchRefused, match="^download_error:timeout"):
        get(f"{server}/drip", timeout=1.0, max_bytes=1 << 20, allowed=["127.0.0.1"])


def test_only_bodies_that_decode_as_images_reach_the_mirror(server, tmp_path):
    import pyarrow.parquet as pq

    from kidata.sources.fetch import fetch_images

    urls = [f"{server}/html", f"{server}/jpeg", f"{server}/secret"]
    pq.write_table(pa.table({"image_url": urls, "image_sha256": [None, None, None]}), tmp_path / "p.parquet")
    report = fetch_images([tmp_path / "p.parquet"], tmp_path / "mirror", workers=2, progress=False,
                          allowed=["127.0.0.1"])
    assert report.to_json()["failures_by_reason"] == {"not_an_image": 2} and report.fetched == 1
    assert [p.read_bytes() for p in (tmp_path / "mirror").iterdir()] == [Handler.jpeg]
    shutil.rmtree(tmp_path / "mirror")
    refused = fetch_images([tmp_path / "p.parquet"], tmp_path / "mirror", workers=2, progress=False)
    assert refused.to_json()["failures_by_reason"] == {"refused_address": 3}


def test_a_network_that_is_not_an_address_is_refused_naming_it(tmp_path):
    from kidata.sources.fetch import fetch_images

    with pytest.raises(ValueError, match=r"--allow-network 'intranet' is not an address or network"):
        fetch_images([tmp_path / "p.parquet"], tmp_path / "mirror", allowed=["intranet"])
