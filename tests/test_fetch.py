"""batchlab.fetch: downloading the user's datasets from mirrors (a local HTTP server on 127.0.0.1 serving tiny
files in the standard formats, with the test's checksums), resuming, verifying, unpacking, and the
``download_data`` target of the workflow."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import re
import socket
import struct
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from batchlab import config, data, fetch

from studies import ROOT

# -- a local mirror -----------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """GET with ``Range: bytes=<start>-`` (206, or 416 past the end); the server's ``files`` map URL paths to
    bytes, ``cut`` cuts the body of a path after so many bytes (once), then closes the connection or, for a
    path in ``stall``, keeps it open until that event is set; ``ranges`` false ignores Range."""

    def do_GET(self):
        server = self.server
        asked = self.headers.get("Range")
        server.requests.append((self.path, asked))
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = int(re.fullmatch(r"bytes=(\d+)-", asked)[1]) if asked and server.ranges else 0
        if start >= len(body) > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut = server.cut.pop(self.path, None)
        self.wfile.write(body[start:start + cut] if cut is not None else body[start:])
        if cut is not None and self.path in server.stall:  # keep the connection open, silent
            server.stall.pop(self.path).wait(timeout=10)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.cut, httpd.stall, httpd.requests, httpd.ranges = {}, {}, {}, [], True
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def closed_port_url() -> str:
    """An address on 127.0.0.1 where nothing listens: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/mirror/"


def md5(blob: bytes) -> str:
    return hashlib.md5(blob).hexdigest()


# -- tiny files in the publishers' formats --------------------------------------------------------------------


def idx_gz(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def tiny_mnist(folder: str = "mnist", n_train: int = 20, n_test: int = 5) -> tuple[dict, dict]:
    """The four .gz IDX files (by file name) and their checksums (by path under data_dir). Random images do
    not compress, so the training images are ~16 KB: enough to cut a transfer in the middle."""
    rng = np.random.default_rng(0)
    blobs = {
        "train-images-idx3-ubyte.gz": idx_gz(rng.integers(0, 256, (n_train, 28, 28))),
        "train-labels-idx1-ubyte.gz": idx_gz(rng.integers(0, 10, n_train)),
        "t10k-images-idx3-ubyte.gz": idx_gz(rng.integers(0, 256, (n_test, 28, 28))),
        "t10k-labels-idx1-ubyte.gz": idx_gz(rng.integers(0, 10, n_test)),
    }
    return blobs, {f"{folder}/{name}": md5(blob) for name, blob in blobs.items()}


def tar_gz(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return out.getvalue()


def tiny_cifar(per_batch: int = 3) -> tuple[bytes, dict]:
    """cifar-10-python.tar.gz with the six batch pickles (and the archive's other files), and the checksums."""
    rng = np.random.default_rng(1)
    batches = {name: pickle.dumps({b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                                   b"labels": [int(v) for v in rng.integers(0, 10, per_batch)]})
               for name in data.CIFAR10_BATCHES}
    members = {f"cifar-10-batches-py/{name}": blob for name, blob in batches.items()}
    archive = tar_gz({**members, "cifar-10-batches-py/batches.meta": b"meta", "cifar-10-batches-py/readme.html": b""})
    sums = {f"cifar10/{name}": md5(blob) for name, blob in members.items()}
    return archive, {**sums, "cifar10/cifar-10-python.tar.gz": md5(archive)}


def serve(server, folder: str, blobs: dict) -> str:
    server.files.update({f"/{folder}/{name}": blob for name, blob in blobs.items()})
    return f"{server.url}/{folder}/"


# -- fetching ---------------------------------------------------------------------------------------------------


def test_mnist_lands_where_the_loader_reads_and_prepares(server, tmp_path, monkeypatch, caplog):
    blobs, sums = tiny_mnist()
    mirror = serve(server, "mnist", blobs)
    fetch.fetch("mnist", tmp_path / "data", mirrors=[mirror], checksums=sums)
    folder = tmp_path / "data" / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(blobs)  # no .part left behind
    assert all((folder / name).read_bytes() == blob for name, blob in blobs.items())
    monkeypatch.setattr(data, "CHECKSUMS", sums)  # the test's files stand for the published ones
    shapes = data.prepare("mnist", {}, tmp_path / "data", tmp_path / "mnist.npz", verify=True)
    assert shapes["x_train"] == (20, 1, 28, 28) and shapes["y_test"] == (5,)
    # a second run is a no-op: nothing is asked of the mirror, and the log says so
    asked = len(server.requests)
    with caplog.at_level("INFO", logger="batchlab.fetch"):
        fetch.fetch("mnist", tmp_path / "data", mirrors=[mirror], checksums=sums)
    assert len(server.requests) == asked
    assert "train-images-idx3-ubyte already present and verified; nothing to download" in caplog.text


def test_cifar10_is_unpacked_into_place_once_every_batch_verifies(server, tmp_path):
    archive, sums = tiny_cifar()
    mirror = serve(server, "kriz", {"cifar-10-python.tar.gz": archive})
    fetch.fetch("cifar10", tmp_path / "data", mirrors=[mirror], checksums=sums)
    folder = tmp_path / "data" / "cifar10"
    assert [p.name for p in folder.iterdir()] == ["cifar-10-batches-py"]  # no archive, temp folder or .part
    assert all(md5((tmp_path / "data" / rel).read_bytes()) == sums[rel] for rel in data.DATASETS["cifar10"].user_files)
    shapes = data.prepare("cifar10", {}, tmp_path / "data", tmp_path / "cifar10.npz", verify=False)
    assert shapes["x_train"] == (15, 3, 32, 32) and shapes["x_test"] == (3, 3, 32, 32)


def test_an_archive_put_there_by_hand_is_verified_and_unpacked_without_the_network(server, tmp_path):
    archive, sums = tiny_cifar()
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-python.tar.gz").write_bytes(archive)
    fetch.fetch("cifar10", tmp_path, mirrors=[f"{server.url}/none/"], checksums=sums)
    assert server.requests == []
    assert [p.name for p in (tmp_path / "cifar10").iterdir()] == ["cifar-10-batches-py"]


def test_an_archive_missing_a_batch_is_refused_and_nothing_is_put_in_place(server, tmp_path):
    archive, sums = tiny_cifar()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if not m.name.endswith("test_batch")}
    short = tar_gz(members)
    mirror = serve(server, "kriz", {"cifar-10-python.tar.gz": short})
    with pytest.raises(fetch.FetchError, match="lacks cifar-10-batches-py/test_batch"):
        fetch.fetch("cifar10", tmp_path, mirrors=[mirror], checksums={**sums, "cifar10/cifar-10-python.tar.gz": md5(short)})
    assert not (tmp_path / "cifar10" / "cifar-10-batches-py").exists()
    assert not list((tmp_path / "cifar10").glob(".unpack-*"))


def test_an_unsafe_archive_member_is_refused(server, tmp_path):
    archive, sums = tiny_cifar()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    evil = tar_gz({**members, "cifar-10-batches-py/../../../escaped": b"outside"})
    mirror = serve(server, "kriz", {"cifar-10-python.tar.gz": evil})
    with pytest.raises(fetch.FetchError, match="cannot unpack"):
        fetch.fetch("cifar10", tmp_path / "data", mirrors=[mirror],
                    checksums={**sums, "cifar10/cifar-10-python.tar.gz": md5(evil)})
    assert not list(tmp_path.rglob("escaped")) and not (tmp_path / "data" / "cifar10" / "cifar-10-batches-py").exists()


def test_a_transfer_cut_short_is_resumed_with_a_range_request(server, tmp_path):
    blobs, sums = tiny_mnist()
    mirror = serve(server, "mnist", blobs)
    server.cut["/mnist/train-images-idx3-ubyte.gz"] = 5000
    fetch.fetch("mnist", tmp_path, mirrors=[mirror], checksums=sums)
    asked = [rng for path, rng in server.requests if path == "/mnist/train-images-idx3-ubyte.gz"]
    assert asked == [None, "bytes=5000-"]
    assert (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").read_bytes() == blobs["train-images-idx3-ubyte.gz"]


def test_a_stalled_transfer_times_out_and_is_resumed(server, tmp_path):
    blobs, sums = tiny_mnist()
    mirror = serve(server, "mnist", blobs)
    path = "/mnist/train-images-idx3-ubyte.gz"
    server.cut[path], server.stall[path] = 3000, threading.Event()
    release = server.stall[path]
    try:
        fetch.fetch("mnist", tmp_path, mirrors=[mirror], checksums=sums, timeout=0.2)
    finally:
        release.set()
    assert [rng for p, rng in server.requests if p == path] == [None, "bytes=3000-"]
    assert (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").read_bytes() == blobs["train-images-idx3-ubyte.gz"]


def test_a_part_left_by_an_earlier_run_is_resumed(server, tmp_path):
    blobs, sums = tiny_mnist()
    mirror = serve(server, "mnist", blobs)
    part = tmp_path / "mnist" / "train-images-idx3-ubyte.gz.part"
    part.parent.mkdir()
    part.write_bytes(blobs["train-images-idx3-ubyte.gz"][:7000])
    fetch.fetch("mnist", tmp_path, mirrors=[mirror], checksums=sums)
    assert ("/mnist/train-images-idx3-ubyte.gz", "bytes=7000-") in server.requests
    assert (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").read_bytes() == blobs["train-images-idx3-ubyte.gz"]
    assert not part.exists()


@pytest.mark.parametrize("ranges", [True, False])
def test_a_bad_part_is_replaced_by_the_whole_file(server, tmp_path, ranges):
    """A server that ignores Range sends the whole file (200): it replaces the part; a resumed file that fails
    its checksum is downloaded again from the start."""
    blobs, sums = tiny_mnist()
    mirror = serve(server, "mnist", blobs)
    server.ranges = ranges
    part = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz.part"
    part.parent.mkdir()
    part.write_bytes(b"garbage")
    fetch.fetch("mnist", tmp_path, mirrors=[mirror], checksums=sums)
    assert (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").read_bytes() == blobs["train-labels-idx1-ubyte.gz"]
    asked = [rng for path, rng in server.requests if path.endswith("train-labels-idx1-ubyte.gz")]
    assert asked == (["bytes=7-", None] if ranges else ["bytes=7-"])


def test_a_corrupted_file_is_deleted_and_the_next_mirror_tried(server, tmp_path):
    blobs, sums = tiny_mnist()
    bad = serve(server, "bad", {name: blob[:-1] + b"x" for name, blob in blobs.items()})
    good = serve(server, "good", blobs)
    with pytest.raises(fetch.FetchError) as info:
        fetch.fetch("mnist", tmp_path, mirrors=[bad], checksums=sums)
    assert f"MD5 {md5(blobs['train-images-idx3-ubyte.gz'][:-1] + b'x')}" in str(info.value)
    assert not list((tmp_path / "mnist").iterdir())  # neither renamed nor left as a .part
    fetch.fetch("mnist", tmp_path, mirrors=[bad, good], checksums=sums)
    assert all((tmp_path / "mnist" / name).read_bytes() == blob for name, blob in blobs.items())


def test_an_unreachable_mirror_is_skipped_for_the_next(server, tmp_path, caplog):
    blobs, sums = tiny_mnist()
    closed = closed_port_url()
    with caplog.at_level("WARNING", logger="batchlab.fetch"):
        fetch.fetch("mnist", tmp_path, mirrors=[closed, serve(server, "mnist", blobs)], checksums=sums)
    assert all((tmp_path / "mnist" / name).read_bytes() == blob for name, blob in blobs.items())
    assert f"{closed}train-images-idx3-ubyte.gz: " in caplog.text and "trying the next mirror" in caplog.text


def test_offline_fails_at_once_with_one_line_naming_the_addresses_and_the_way_by_hand(server, tmp_path):
    mirrors = [closed_port_url(), f"{server.url}/missing/"]
    with pytest.raises(fetch.FetchError) as info:
        fetch.fetch("mnist", tmp_path / "data", mirrors=mirrors, checksums={})
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("dataset 'mnist': could not download train-images-idx3-ubyte.gz from ")
    assert f"{mirrors[0]}train-images-idx3-ubyte.gz (" in msg and "HTTP 404" in msg
    target = tmp_path / "data" / "mnist" / "train-images-idx3-ubyte.gz"
    assert msg.endswith(f"download {mirrors[0]}train-images-idx3-ubyte.gz yourself and put it at {target}")
    assert len(server.requests) == 1  # one try per mirror, no retries
    with pytest.raises(fetch.FetchError, match=r"unpack it in .*cifar10 \(the loader reads .*cifar-10-batches-py/\)"):
        fetch.fetch("cifar10", tmp_path / "data", mirrors=mirrors[:1])


def test_a_damaged_file_is_set_aside_and_replaced(server, tmp_path):
    blobs, sums = tiny_mnist()
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"truncated")
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        (folder / name).write_bytes(blobs[name])
    fetch.fetch("mnist", tmp_path, mirrors=[serve(server, "mnist", blobs)], checksums=sums)
    assert [path for path, _ in server.requests] == ["/mnist/t10k-labels-idx1-ubyte.gz"]
    assert (folder / "t10k-labels-idx1-ubyte.gz.damaged").read_bytes() == b"truncated"
    assert (folder / "t10k-labels-idx1-ubyte.gz").read_bytes() == blobs["t10k-labels-idx1-ubyte.gz"]


def test_without_verification_files_present_are_taken_as_they_are(server, tmp_path):
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    for stem in data.IDX_STEMS:
        (folder / stem).write_bytes(b"your own variant")
    fetch.fetch("fashion_mnist", tmp_path, mirrors=[f"{server.url}/none/"], verify=False)
    assert server.requests == [] and sorted(p.name for p in folder.iterdir()) == sorted(data.IDX_STEMS)


# -- the config and the parse ---------------------------------------------------------------------------------


def test_the_default_mirrors_are_the_schemas_and_each_downloadable_dataset_has_some(tiny_raw):
    assert config.validate(tiny_raw)["download"]["mirrors"] == fetch.default_mirrors()
    assert set(fetch.default_mirrors()) == set(fetch.REMOTES) == {n for n, d in data.DATASETS.items() if d.user_files}
    assert fetch.default_mirrors()["cifar10"] == ["https://www.cs.toronto.edu/~kriz/"]


def test_a_mirror_that_is_not_an_http_address_names_the_key(tiny_raw):
    with pytest.raises(config.ConfigError, match=r"'download.mirrors.mnist\[0\]': value 'ftp://a/' .*http"):
        config.validate(dict(tiny_raw, download={"mirrors": {"mnist": ["ftp://a/"]}}))


@pytest.mark.parametrize("argv, alone", [
    (["snakemake", "--cores", "1", "download_data"], True),
    (["snakemake", "-n", "download_data", "--configfile", "c.yaml"], True),
    (["snakemake", "--cores", "1"], False),
    (["snakemake", "download_data", "all"], False),
    (["snakemake", "--config", "study=download_data"], False),
])
def test_the_parse_knows_when_download_data_is_the_only_target(argv, alone):
    assert fetch.requests_only_download(argv) is alone


@pytest.mark.parametrize("argv, dry", [
    (["snakemake", "-n"], True),
    (["snakemake", "--dry-run", "--configfile", "c.yaml"], True),
    (["snakemake", "-np", "--cores", "2"], True),
    (["snakemake", "--cores", "all"], False),
    (["python", "--version-of-something-else"], False),
])
def test_the_parse_knows_a_dry_run(argv, dry):
    assert fetch.is_dry_run(argv) is dry


def test_a_missing_dataset_points_to_download_data(tmp_path, tiny_raw):
    cfg = config.validate(dict(tiny_raw, datasets=["cifar10"], dataset_options={}, data_dir=str(tmp_path)))
    with pytest.raises(config.ConfigError, match=r"`snakemake --cores 1 download_data` fetches the publisher's files"):
        config.check_data_available(cfg, tmp_path / "prepared")


# -- the workflow -----------------------------------------------------------------------------------------------


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--cores", "1", *args, "--configfile", str(workdir / "study.yaml")]  # --configfile takes what follows
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def cifar_study(workdir: Path, **changes) -> None:
    study = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    study.update(datasets=["cifar10"], dataset_options={}, architectures=["mlp"], **changes)
    (workdir / "study.yaml").write_text(yaml.safe_dump(study))


@pytest.mark.workflow
def test_download_data_runs_with_the_data_missing_and_fails_in_one_line_offline(tmp_path):
    mirrors = [closed_port_url(), closed_port_url()]
    cifar_study(tmp_path, download={"mirrors": {"cifar10": mirrors}})
    # a dry run plans the study without its data, saying what to type; a real run stops before any job
    planned = snakemake(tmp_path, "-n")
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert "`snakemake --cores 1 download_data`" in planned.stdout + planned.stderr
    assert "this dry run plans the study without it" in planned.stdout + planned.stderr
    stopped = snakemake(tmp_path)
    assert stopped.returncode != 0 and "`snakemake --cores 1 download_data`" in stopped.stdout + stopped.stderr
    assert not (tmp_path / "results").exists()
    dry = snakemake(tmp_path, "-n", "download_data")
    assert dry.returncode == 0 and "download_data" in dry.stdout, dry.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".snakemake", "study.yaml"]  # no data, logs, results
    result = snakemake(tmp_path, "download_data")
    assert result.returncode != 0
    log = (tmp_path / "logs" / "download_data.log").read_text()
    line = next(line for line in log.splitlines() if " ERROR " in line)
    assert f"{mirrors[0]}cifar-10-python.tar.gz (" in line and f"{mirrors[1]}cifar-10-python.tar.gz (" in line
    assert str(Path("data") / "cifar10" / "cifar-10-python.tar.gz") in line and "Traceback" not in log
    assert not (tmp_path / "results").exists()


@pytest.mark.workflow
def test_download_data_is_a_logged_no_op_when_the_files_are_there(tmp_path):
    cifar_study(tmp_path, verify_data_files=False)
    folder = tmp_path / "data" / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in data.CIFAR10_BATCHES:
        (folder / name).write_bytes(b"")
    result = snakemake(tmp_path, "download_data")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "already present (not verified" in (tmp_path / "logs" / "download_data.log").read_text()
