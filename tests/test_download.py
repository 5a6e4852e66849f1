"""The download machinery against a local HTTP server: full, resumed, corrupt, truncated, refused."""

from __future__ import annotations

import gzip
import json
import tarfile
from pathlib import Path

import pytest
from datafakes import Fault, closed_port_url, make_tar, md5, remote_for

from gslbench.data import cifar10, fashion_mnist, fetch, nuswide21
from gslbench.data.fetch import RetryPolicy, Source
from gslbench.errors import GslbenchError

PAYLOAD = bytes(range(256)) * 4000  # 1,024,000 bytes: a few chunks


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(fetch, "RETRY", RetryPolicy(attempts=3, backoff_s=0.0, timeout_s=5.0))


def _only_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_full_download_is_verified_and_renamed(server, tmp_path):
    remote = remote_for("data.bin", PAYLOAD, (server.add("data.bin", PAYLOAD),))
    digest = fetch.fetch_file(remote, tmp_path)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert digest.sha256 == remote.sha256 and digest.size == len(PAYLOAD)
    assert _only_files(tmp_path) == ["data.bin"]
    assert server.requests_for("data.bin") == [None]


def test_verified_file_is_not_fetched_again(server, tmp_path):
    remote = remote_for("data.bin", PAYLOAD, (server.add("data.bin", PAYLOAD),))
    fetch.fetch_file(remote, tmp_path)
    fetch.fetch_file(remote, tmp_path)
    assert len(server.requests_for("data.bin")) == 1


def test_wrong_file_in_place_is_replaced(server, tmp_path):
    remote = remote_for("data.bin", PAYLOAD, (server.add("data.bin", PAYLOAD),))
    (tmp_path / "data.bin").write_bytes(b"stale")
    fetch.fetch_file(remote, tmp_path)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_resume_from_part_file_uses_range(server, tmp_path):
    remote = remote_for("data.bin", PAYLOAD, (server.add("data.bin", PAYLOAD),))
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:300_000])
    fetch.fetch_file(remote, tmp_path)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert server.requests_for("data.bin") == ["bytes=300000-"]
    assert _only_files(tmp_path) == ["data.bin"]


def test_resume_when_server_ignores_range_starts_over(server, tmp_path):
    url = server.add("data.bin", PAYLOAD, Fault(ignore_range=True))
    remote = remote_for("data.bin", PAYLOAD, (url,))
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:1000])
    fetch.fetch_file(remote, tmp_path)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_complete_part_file_is_finished_without_transfer(server, tmp_path):
    remote = remote_for("data.bin", PAYLOAD, (server.add("data.bin", PAYLOAD),))
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)  # server answers 416
    fetch.fetch_file(remote, tmp_path)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_dropped_connection_resumes_where_it_stopped(server, tmp_path):
    url = server.add("data.bin", PAYLOAD, Fault(times=1, drop_after=400_000))
    fetch.fetch_file(remote_for("data.bin", PAYLOAD, (url,)), tmp_path)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert server.requests_for("data.bin") == [None, "bytes=400000-"]


def test_server_error_is_retried(server, tmp_path):
    url = server.add("data.bin", PAYLOAD, Fault(times=2, status=503))
    fetch.fetch_file(remote_for("data.bin", PAYLOAD, (url,)), tmp_path)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert len(server.requests_for("data.bin")) == 3


def test_checksum_mismatch_is_a_clear_error_and_keeps_nothing(server, tmp_path):
    corrupt = bytearray(PAYLOAD)
    corrupt[12345] ^= 0xFF
    url = server.add("data.bin", bytes(corrupt))
    remote = remote_for("data.bin", PAYLOAD, (url,))
    with pytest.raises(GslbenchError, match="checksum mismatch") as info:
        fetch.fetch_file(remote, tmp_path)
    message = str(info.value)
    assert "\n" not in message and url in message and remote.md5 in message
    assert _only_files(tmp_path) == []  # neither data.bin nor data.bin.part


def test_corrupt_resumed_part_is_discarded_and_fetched_again(server, tmp_path):
    remote = remote_for("data.bin", PAYLOAD, (server.add("data.bin", PAYLOAD),))
    (tmp_path / "data.bin.part").write_bytes(b"\xff" * 5000)  # wrong prefix
    fetch.fetch_file(remote, tmp_path)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert server.requests_for("data.bin") == ["bytes=5000-", None]


def test_truncated_body_is_rejected_by_size(server, tmp_path):
    url = server.add("data.bin", PAYLOAD, Fault(body=PAYLOAD[:500_000]))
    remote = remote_for("data.bin", PAYLOAD, (url,))
    with pytest.raises(GslbenchError, match="500,000 bytes, expected 1,024,000") as info:
        fetch.fetch_file(remote, tmp_path)
    assert str(info.value.args[0]).count("\n") == 0
    assert _only_files(tmp_path) == []


def test_connection_always_closed_early_fails_after_retries(server, tmp_path):
    url = server.add("data.bin", PAYLOAD, Fault(drop_after=1000))
    remote = remote_for("data.bin", PAYLOAD, (url,))
    with pytest.raises(GslbenchError) as info:
        fetch.fetch_file(remote, tmp_path)
    message = str(info.value)
    assert url in message and str(tmp_path / "data.bin") in message and "\n" not in message
    assert len(server.requests_for("data.bin")) == 3
    assert not (tmp_path / "data.bin").exists()  # only a .part, which the next run resumes


def test_refused_connection_names_url_and_where_to_put_the_file(tmp_path):
    url = closed_port_url("data.bin")
    remote = remote_for("data.bin", PAYLOAD, (url,))
    with pytest.raises(GslbenchError, match="put it at") as info:
        fetch.fetch_file(remote, tmp_path)
    message = str(info.value)
    assert url in message and str(tmp_path / "data.bin") in message and "\n" not in message
    assert not (tmp_path / "data.bin").exists()


def test_next_mirror_after_missing_file(server, tmp_path):
    good = server.add("data.bin", PAYLOAD)
    missing = (tmp_path / "nowhere" / "data.bin").as_uri()
    remote = remote_for("data.bin", PAYLOAD, (missing, server.url("absent.bin"), good))
    fetch.fetch_file(remote, tmp_path / "out")
    assert (tmp_path / "out" / "data.bin").read_bytes() == PAYLOAD


def test_unusable_url_is_a_user_error(tmp_path):
    remote = remote_for("data.bin", PAYLOAD, ("nonsense://host/data.bin", "no-scheme"))
    with pytest.raises(GslbenchError, match="unknown url type: nonsense.*not a usable URL"):
        fetch.fetch_file(remote, tmp_path)


def test_file_url(tmp_path):
    source = tmp_path / "src" / "data.bin"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    fetch.fetch_file(remote_for("data.bin", PAYLOAD, (source.as_uri(),)), tmp_path / "out")
    assert (tmp_path / "out" / "data.bin").read_bytes() == PAYLOAD


def test_gzip_files_are_checked_on_their_decompressed_bytes(server, tmp_path):
    content = b"idx data " * 1000
    recompressed = gzip.compress(content, compresslevel=1, mtime=123)  # another mirror's .gz
    remote = remote_for("f.gz", gzip.compress(content, mtime=0), (server.add("f.gz", recompressed),),
                        gunzip=True)
    fetch.fetch_file(remote, tmp_path)
    assert gzip.decompress((tmp_path / "f.gz").read_bytes()) == content


def test_broken_gzip_is_rejected(server, tmp_path):
    good = gzip.compress(b"idx data " * 1000, mtime=0)
    remote = remote_for("f.gz", good, (server.add("f.gz", good[:-20]),), gunzip=True)
    with pytest.raises(GslbenchError, match="gzip"):
        fetch.fetch_file(remote, tmp_path)
    assert _only_files(tmp_path) == []


def test_user_url_overrides_the_mirrors(server, tmp_path):
    remote = remote_for("data.bin", PAYLOAD, (closed_port_url(),))
    assert fetch.resolve_urls(remote, "http://host/dir/", 1) == ("http://host/dir/data.bin",)
    assert fetch.resolve_urls(remote, "http://host/x.bin", 1) == ("http://host/x.bin",)
    assert fetch.resolve_urls(remote, "http://host/dir", 4) == ("http://host/dir/data.bin",)
    source = Source("fake", (remote,))
    fetch.fetch_source(source, tmp_path, url=server.add("mirror.bin", PAYLOAD))
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_fetch_source_writes_the_manifest(server, tmp_path):
    a, b = b"first" * 100, b"second" * 100
    source = Source("fake", (remote_for("a.bin", a, (server.add("a.bin", a),)),
                             remote_for("b.bin", b, (server.add("b.bin", b),))))
    fetch.fetch_source(source, tmp_path)
    manifest = json.loads((tmp_path / fetch.MANIFEST).read_text())
    assert manifest["source"] == "fake"
    assert manifest["files"] == {"a.bin": source.files[0].sha256, "b.bin": source.files[1].sha256}
    assert fetch.source_sha256(tmp_path, "fake") == manifest["sha256"]
    assert fetch.combined_sha256({"x": "abc"}) == "abc"


def test_import_from_folder_is_verified(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.bin").write_bytes(PAYLOAD[:-1])
    source = Source("fake", (remote_for("data.bin", PAYLOAD, (closed_port_url(),)),))
    with pytest.raises(GslbenchError, match="size 1,023,999 bytes"):
        fetch.fetch_source(source, tmp_path / "raw", from_dir=tmp_path / "mine")
    with pytest.raises(GslbenchError, match="no such file"):
        fetch.fetch_source(source, tmp_path / "raw", from_dir=tmp_path / "empty")


def test_source_without_host_explains_what_to_do(tmp_path):
    with pytest.raises(GslbenchError, match="Groundtruth/AllLabels"):
        fetch.fetch_source(nuswide21.SOURCE, tmp_path)


# --- archives ----------------------------------------------------------------------------------

def _tar_source(tarball: bytes, urls: tuple[str, ...], expected) -> Source:
    return Source("fake", (remote_for("a.tar.gz", tarball, urls),), archive="tar",
                  extracted=tuple(expected))


def test_archive_is_unpacked_and_members_checked(server, tmp_path):
    members = {"top/one": b"1" * 10, "top/two": b"2" * 20}
    tarball = make_tar(members)
    source = _tar_source(tarball, (server.add("a.tar.gz", tarball),),
                         [(name, md5(data)) for name, data in members.items()])
    fetch.fetch_source(source, tmp_path)
    assert (tmp_path / "top" / "two").read_bytes() == b"2" * 20
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".extract")]


def test_archive_member_with_wrong_md5_is_refused(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(make_tar({"top/one": b"1" * 10}))
    with pytest.raises(GslbenchError, match="top/one fails its md5"):
        fetch.extract_tar(archive, tmp_path, (("top/one", "0" * 32),))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz"]


@pytest.mark.parametrize("evil", ["../escaped", "top/../../up"])
def test_archive_path_escape_is_refused(tmp_path, evil):
    info = tarfile.TarInfo(evil)
    info.size = 3
    archive = tmp_path / "inner" / "a.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(make_tar({"top/one": b"1"}, extra=[info]))
    with pytest.raises(GslbenchError, match="unsafe member"):
        fetch.extract_tar(archive, archive.parent, (("top/one", md5(b"1")),))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inner"]
    assert sorted(p.name for p in archive.parent.iterdir()) == ["a.tar.gz"]


def test_archive_absolute_path_stays_inside(tmp_path):
    outside = tmp_path / "outside-gslbench-test"
    info = tarfile.TarInfo(str(outside))  # the "data" filter strips the leading "/"
    info.size = 3
    archive = tmp_path / "inner" / "a.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(make_tar({"top/one": b"1"}, extra=[info]))
    fetch.extract_tar(archive, archive.parent, (("top/one", md5(b"1")),))
    assert not outside.exists()
    assert sorted(p.name for p in archive.parent.iterdir()) == ["a.tar.gz", "top"]


def test_archive_symlink_out_of_the_folder_is_refused(tmp_path):
    link = tarfile.TarInfo("top/link")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(make_tar({"top/one": b"1"}, extra=[link]))
    with pytest.raises(GslbenchError, match="unsafe member"):
        fetch.extract_tar(archive, tmp_path, (("top/one", md5(b"1")),))


def test_corrupt_archive_is_a_user_error(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(gzip.compress(b"not a tar file" * 100))
    with pytest.raises(GslbenchError, match="cannot unpack"):
        fetch.extract_tar(archive, tmp_path, (("top/one", md5(b"1")),))


# --- the real registry -------------------------------------------------------------------------

def test_registry_holds_the_official_sources():
    cifar = cifar10.SOURCE
    (tarball,) = cifar.files
    assert tarball.urls[0] == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert tarball.size == 170_498_071 and tarball.md5 == "c58f30108f718f92721af3b95e74349a"
    assert len(cifar.extracted) == 7 and cifar.archive == "tar"
    fashion = fashion_mnist.SOURCE
    assert {f.md5 for f in fashion.files} == {
        "f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9",
        "8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965"}
    for remote in fashion.files:
        assert remote.gunzip and remote.urls[0].startswith("file:///usr/share/datasets/")
        assert any("amazonaws" in url for url in remote.urls)
        assert len(remote.sha256) == 64
    assert not nuswide21.SOURCE.files
