"""The downloader against a local HTTP server on 127.0.0.1 (never the internet): good, corrupt, truncated files,
dead mirrors, and ``gradstarve data download mnist``."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from typer.testing import CliRunner

from gradstarve.cli import app
from gradstarve.data import mnist
from gradstarve.data.download import download, md5_of_file
from gradstarve.data.errors import DataError, DownloadError
from idx_files import fake_mnist, idx_bytes

runner = CliRunner()
PAYLOAD = bytes(range(256)) * 1000  # 256 kB: several chunks
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (body, mode)``; mode "ok", or "truncate" (announces the full length, sends
    half and closes). Unknown paths get 404."""

    def do_GET(self):
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        body, mode = route
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if mode == "truncate" else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes = {}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def dead_url():
    """A URL on a port nobody listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _only_file(folder):
    return sorted(path.name for path in folder.iterdir())


def test_good_download_is_verified_and_leaves_no_temporary_file(server, tmp_path):
    httpd, base = server
    httpd.routes["/data.bin"] = (PAYLOAD, "ok")
    dest = download([f"{base}/data.bin"], tmp_path / "sub" / "data.bin", PAYLOAD_MD5.upper(), progress=False)
    assert dest.read_bytes() == PAYLOAD and md5_of_file(dest) == PAYLOAD_MD5
    assert _only_file(tmp_path / "sub") == ["data.bin"]


@pytest.mark.parametrize(
    ("body", "mode", "reason"),
    [
        (PAYLOAD[:-1] + b"x", "ok", f"checksum mismatch: got MD5 .* for {len(PAYLOAD)} bytes, expected {PAYLOAD_MD5}"),
        (PAYLOAD, "truncate", f"truncated: received {len(PAYLOAD) // 2} of the {len(PAYLOAD)} bytes"),
    ],
    ids=["corrupt", "truncated"],
)
def test_bad_download_raises_and_leaves_nothing_behind(server, tmp_path, body, mode, reason):
    httpd, base = server
    httpd.routes["/data.bin"] = (body, mode)
    with pytest.raises(DownloadError, match=reason) as caught:
        download([f"{base}/data.bin"], tmp_path / "data.bin", PAYLOAD_MD5, progress=False)
    assert isinstance(caught.value, DataError)
    assert f"expected MD5 {PAYLOAD_MD5}" in str(caught.value) and "Nothing was written" in str(caught.value)
    assert _only_file(tmp_path) == []


def test_failed_download_keeps_an_existing_file_untouched(server, tmp_path):
    httpd, base = server
    httpd.routes["/data.bin"] = (PAYLOAD, "truncate")
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"old contents")
    with pytest.raises(DownloadError):
        download([f"{base}/data.bin"], dest, PAYLOAD_MD5, progress=False)
    assert dest.read_bytes() == b"old contents" and _only_file(tmp_path) == ["data.bin"]


def test_dead_and_bad_mirrors_fall_back_to_the_next_one(server, dead_url, tmp_path):
    httpd, base = server
    httpd.routes["/corrupt/data.bin"] = (PAYLOAD[::-1], "ok")
    httpd.routes["/good/data.bin"] = (PAYLOAD, "ok")
    urls = [f"{dead_url}/data.bin", f"{base}/missing/data.bin", f"{base}/corrupt/data.bin", f"{base}/good/data.bin"]
    dest = download(urls, tmp_path / "data.bin", PAYLOAD_MD5, progress=False, timeout=5)
    assert dest.read_bytes() == PAYLOAD and _only_file(tmp_path) == ["data.bin"]


def test_all_mirrors_failing_lists_every_mirror_and_reason(server, dead_url, tmp_path):
    _, base = server
    with pytest.raises(DownloadError) as caught:
        download([f"{dead_url}/a", f"{base}/b"], tmp_path / "a", PAYLOAD_MD5, progress=False, timeout=5)
    message = str(caught.value)
    assert "from any of 2 mirror(s)" in message
    assert f"{dead_url}/a: unreachable" in message and f"{base}/b: HTTP 404" in message


def test_download_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="urls: need at least one URL"):
        download([], tmp_path / "x", PAYLOAD_MD5)
    with pytest.raises(ValueError, match="md5: expected 32 hex digits"):
        download(["http://127.0.0.1:1/x"], tmp_path / "x", "abc")


@pytest.fixture
def mnist_mirror(server, monkeypatch):
    """The local server as an MNIST mirror serving small generated .gz files, with the checksum table patched to
    describe them."""
    httpd, base = server
    entries = []
    arrays = {}
    for entry in mnist.MNIST_FILES:
        images, digits = fake_mnist(30 if entry.split == "train" else 10, seed=len(entries))
        array = images if entry.kind == "images" else digits
        body = gzip.compress(idx_bytes(array))
        httpd.routes[f"/mnist/{entry.gz_name}"] = (body, "ok")
        arrays[entry.npz_key] = array
        entries.append(
            dataclasses.replace(
                entry,
                count=len(array),
                gz_md5=hashlib.md5(body).hexdigest(),
                content_sha256=hashlib.sha256(array.tobytes()).hexdigest(),
            )
        )
    monkeypatch.setattr(mnist, "MNIST_FILES", tuple(entries))
    return f"{base}/mnist/", arrays


def test_download_mnist_fetches_verifies_and_skips_verified_copies(mnist_mirror, dead_url, tmp_path):
    mirror, arrays = mnist_mirror
    fetched = mnist.download_mnist(tmp_path, [dead_url, mirror.rstrip("/")], progress=False, timeout=5)
    assert [item.downloaded for item in fetched] == [True] * 4
    assert _only_file(tmp_path / "mnist") == sorted(entry.gz_name for entry in mnist.MNIST_FILES)
    images, digits = mnist.load_mnist(tmp_path, "train", verify=True)
    np.testing.assert_array_equal(images.numpy(), arrays["x_train"])
    np.testing.assert_array_equal(digits.numpy(), arrays["y_train"])

    corrupt = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    corrupt.write_bytes(b"junk")
    again = mnist.download_mnist(tmp_path, [mirror], progress=False)
    assert [item.downloaded for item in again] == [False, False, True, False]  # only the corrupt file is refetched
    assert mnist.load_mnist(tmp_path, "test")[0].shape == (10, 28, 28)


def test_cli_download_then_verify(mnist_mirror, tmp_path):
    mirror, _ = mnist_mirror
    result = runner.invoke(app, ["data", "download", "mnist", "--data-root", str(tmp_path), "--mirror", mirror])
    assert result.exit_code == 0, result.output
    assert result.output.count("downloaded and verified") == 4
    result = runner.invoke(app, ["data", "verify", "mnist", "--data-root", str(tmp_path)])
    assert result.exit_code == 0 and "all files verified" in result.output


def test_cli_download_with_only_dead_mirrors_fails_cleanly(mnist_mirror, dead_url, tmp_path):
    args = ["data", "download", "mnist", "--data-root", str(tmp_path), "--mirror", dead_url, "--timeout", "5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "error:" in result.output and "could not download train-images-idx3-ubyte.gz" in result.output
    assert list((tmp_path / "mnist").iterdir()) == []
