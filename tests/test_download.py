"""asr_s2s.download and ``asr-s2s download``: resumable, checksummed downloads, against a server on 127.0.0.1."""

from __future__ import annotations

import tarfile

import pytest

from asr_s2s.download import DownloadError, download, md5sum, read_md5sums
from corpus_server import CorpusServer, librispeech_tarball, md5_hex

NAME = "dev-clean.tar.gz"


@pytest.fixture(scope="module")
def tarball() -> bytes:
    return librispeech_tarball("dev-clean", speakers=["1001", "1002"])


@pytest.fixture
def server(tarball):
    with CorpusServer({NAME: tarball}) as srv:
        yield srv


def _get(server, dest, **kw):
    return download(f"{server.url}/{NAME}", dest, retry_wait_s=0.0, timeout_s=10, progress=False, **kw)


def test_tarball_is_in_librispeech_layout(tarball, tmp_path):
    (tmp_path / NAME).write_bytes(tarball)
    with tarfile.open(tmp_path / NAME) as tar:
        names = tar.getnames()
    assert "LibriSpeech/dev-clean/1001/10/1001-10-0000.flac" in names
    assert "LibriSpeech/dev-clean/1002/20/1002-20.trans.txt" in names
    assert not any("1003" in n for n in names)


def test_fresh_download_is_verified_and_renamed(server, tarball, tmp_path):
    got = _get(server, tmp_path / NAME, md5=md5_hex(tarball))
    assert got.path.read_bytes() == tarball and got.fetched_bytes == len(tarball) and not got.resumed
    assert not (tmp_path / f"{NAME}.part").exists()
    assert server.requests == [(NAME, None)]
    # a second call finds the verified file and sends no request
    again = _get(server, tmp_path / NAME, md5=md5_hex(tarball))
    assert again.fetched_bytes == 0 and len(server.requests) == 1


def test_partial_download_resumes_with_a_range_request(server, tarball, tmp_path):
    half = len(tarball) // 2
    (tmp_path / f"{NAME}.part").write_bytes(tarball[:half])
    got = _get(server, tmp_path / NAME, md5=md5_hex(tarball))
    assert got.resumed and got.fetched_bytes == len(tarball) - half
    assert server.requests == [(NAME, f"bytes={half}-")]
    assert server.body_bytes_sent == len(tarball) - half, "only the missing bytes travel"
    assert md5sum(tmp_path / NAME) == md5_hex(tarball)


def test_dropped_connection_is_resumed(server, tarball, tmp_path):
    server.cut[NAME] = [1000, 5000]  # the first two responses break off mid-body
    got = _get(server, tmp_path / NAME, md5=md5_hex(tarball))
    assert got.path.read_bytes() == tarball
    assert server.requests == [(NAME, None), (NAME, "bytes=1000-"), (NAME, "bytes=6000-")]


def test_a_server_that_keeps_dropping_gives_up_naming_the_file_and_keeps_the_part(server, tarball, tmp_path):
    server.cut[NAME] = [100, 100, 100]
    with pytest.raises(DownloadError, match=rf"{NAME}: the transfer from .* broke off 3 times") as err:
        _get(server, tmp_path / NAME, md5=md5_hex(tarball), retries=2)
    assert "300 bytes are kept" in str(err.value)
    assert (tmp_path / f"{NAME}.part").stat().st_size == 300 and not (tmp_path / NAME).exists()
    got = _get(server, tmp_path / NAME, md5=md5_hex(tarball))  # the next run resumes
    assert got.resumed and server.requests[-1] == (NAME, "bytes=300-") and got.path.read_bytes() == tarball


def test_checksum_mismatch_deletes_the_download_and_names_the_file(server, tarball, tmp_path):
    wrong = "0" * 32
    with pytest.raises(DownloadError, match=rf"{NAME}: MD5 {md5_hex(tarball)} does not match the published {wrong}"):
        _get(server, tmp_path / NAME, md5=wrong)
    assert not (tmp_path / NAME).exists() and not (tmp_path / f"{NAME}.part").exists()


def test_corrupt_partial_download_is_caught_by_the_checksum(server, tarball, tmp_path):
    (tmp_path / f"{NAME}.part").write_bytes(b"x" * 100)  # garbage where the first 100 bytes should be
    with pytest.raises(DownloadError, match="does not match the published"):
        _get(server, tmp_path / NAME, md5=md5_hex(tarball))
    assert not (tmp_path / f"{NAME}.part").exists()
    assert _get(server, tmp_path / NAME, md5=md5_hex(tarball)).path.read_bytes() == tarball  # then starts over


def test_server_without_range_support_restarts_from_zero(server, tarball, tmp_path):
    server.ignore_range = True
    (tmp_path / f"{NAME}.part").write_bytes(tarball[:500])
    got = _get(server, tmp_path / NAME, md5=md5_hex(tarball))
    assert got.path.read_bytes() == tarball and got.fetched_bytes == len(tarball)


def test_complete_part_file_gets_416_and_is_verified(server, tarball, tmp_path):
    (tmp_path / f"{NAME}.part").write_bytes(tarball)
    got = _get(server, tmp_path / NAME, md5=md5_hex(tarball))
    assert got.path.read_bytes() == tarball and got.fetched_bytes == 0
    assert server.requests == [(NAME, f"bytes={len(tarball)}-")]


def test_http_error_names_the_file(server, tmp_path):
    with pytest.raises(DownloadError, match=r"missing.tar.gz: .* answered HTTP 404"):
        download(f"{server.url}/missing.tar.gz", tmp_path / "missing.tar.gz", retry_wait_s=0, progress=False)


def test_read_md5sums(tmp_path):
    path = tmp_path / "md5sum.txt"
    path.write_text("# comment\n42e2234ba48799c1f50f24a7926300a1  dev-clean.tar.gz\n\nABCDEF0123456789abcdef0123456789 *x.tgz\n")
    assert read_md5sums(path) == {"dev-clean.tar.gz": "42e2234ba48799c1f50f24a7926300a1", "x.tgz": "abcdef0123456789abcdef0123456789"}
    path.write_text("not-a-sum dev-clean.tar.gz\n")
    with pytest.raises(DownloadError, match=r"md5sum.txt:1: expected 'MD5  FILENAME'"):
        read_md5sums(path)


def test_recipe_md5sums_cover_every_subset():
    from conftest import REPO

    sums = read_md5sums(REPO / "recipes" / "librispeech" / "md5sums.txt")
    subsets = ["train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other", "test-clean", "test-other"]
    assert sorted(sums) == sorted(f"{s}.tar.gz" for s in subsets)
    assert sums["dev-clean.tar.gz"] == "42e2234ba48799c1f50f24a7926300a1"


# -- the command ----------------------------------------------------------------------
def test_cli_downloads_verifies_and_reports(run_cli, server, tarball, tmp_path):
    sums = tmp_path / "md5sums.txt"
    sums.write_text(f"{md5_hex(tarball)}  {NAME}\n")
    code, out, _ = run_cli("download", "--base-url", server.url, "--out-dir", tmp_path / "data", "--md5sums", sums,
                           "--retry-wait", "0", "-q", NAME)
    assert code == 0 and out.strip() == str(tmp_path / "data" / NAME)
    assert (tmp_path / "data" / NAME).read_bytes() == tarball


def test_cli_checksum_mismatch_exits_1_naming_the_file(run_cli, server, tmp_path):
    sums = tmp_path / "md5sums.txt"
    sums.write_text(f"{'1' * 32}  {NAME}\n")
    code, out, err = run_cli("download", "--base-url", server.url, "--out-dir", tmp_path, "--md5sums", sums,
                             "--retry-wait", "0", "-q", NAME)
    assert code == 1 and out == ""
    assert f"asr-s2s download: error: {NAME}: MD5" in err and "corrupt download was deleted" in err
    assert not (tmp_path / NAME).exists()


def test_cli_file_without_published_checksum_is_bad_input(run_cli, server, tmp_path):
    sums = tmp_path / "md5sums.txt"
    sums.write_text(f"{'1' * 32}  other.tar.gz\n")
    code, _, err = run_cli("download", "--base-url", server.url, "--out-dir", tmp_path, "--md5sums", sums, NAME)
    assert code == 2 and f"no checksum for {NAME}" in err
    assert server.requests == []
