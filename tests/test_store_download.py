"""The model store against a fake Hub on 127.0.0.1: what is fetched, progress, resume, retries,
clear errors, pinned revisions, integrity, and generation offline afterwards."""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import traceback
from collections import namedtuple
from dataclasses import replace
from pathlib import Path

import pytest
from fake_hub import TINY_REPO, FakeHub, files_from_folder, go_offline, use_fake_hub

from samplemind_gen.catalog import resolve_model
from samplemind_gen.errors import (
    DiskFullError,
    DownloadCancelled,
    DownloadError,
    GatedModelError,
    ModelNotCachedError,
    UnknownModelError,
)
from samplemind_gen.store import cached_snapshot, locate_model, model_status, verify_model
from samplemind_gen.store.cache import cached_model, repo_folder
from samplemind_gen.store.download import download_model
from samplemind_gen.store.integrity import load_manifest
from samplemind_gen.store.progress import ByteProgress

ENGINE_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
}
DiskUsage = namedtuple("DiskUsage", "total used free")
TOKEN = "hf_SECRETtokenDoNotLeak0123456789"


@pytest.fixture
def hub(tiny_musicgen: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    with use_fake_hub(monkeypatch, tiny_musicgen) as fake:
        yield fake


def tiny_spec():  # type: ignore[no-untyped-def]
    return resolve_model(TINY_REPO).spec


def file_gets(hub: FakeHub, name: str) -> list:  # type: ignore[type-arg]
    """GETs that carried the file's bytes (the CDN for LFS files, the Hub for the others)."""
    return [
        r for r in hub.file_requests(name) if r.server == "cdn" or not name.endswith(".safetensors")
    ]


def test_download_fetches_only_engine_files_and_records_the_commit(hub: FakeHub) -> None:
    reports: list[ByteProgress] = []
    path, commit = download_model(tiny_spec(), on_progress=reports.append)

    assert commit == hub.repos[TINY_REPO].refs["main"]
    assert path == repo_folder(TINY_REPO) / "snapshots" / commit
    assert {p.name for p in path.rglob("*")} == ENGINE_FILES  # no .bin/.msgpack/.h5/.onnx/README
    assert (repo_folder(TINY_REPO) / "refs" / "main").read_text() == commit
    assert not hub.file_requests("pytorch_model.bin", "HEAD")

    manifest = load_manifest(TINY_REPO, commit)
    assert manifest is not None and set(manifest.files) == ENGINE_FILES
    weights = manifest.files["model.safetensors"]
    served = hub.repos[TINY_REPO].commits[commit]["model.safetensors"].data
    assert weights.sha256 == hashlib.sha256(served).hexdigest()
    assert manifest.files["config.json"].git_sha1 and not manifest.files["config.json"].sha256
    assert manifest.downloaded_at

    done = [r.done_bytes for r in reports]
    assert done == sorted(done), "progress never goes backwards"
    assert reports[-1].done_bytes == reports[-1].total_bytes == manifest.total_bytes
    assert reports[-1].eta == 0 and any(r.speed > 0 for r in reports)
    assert {r.file for r in reports} >= {"model.safetensors", "config.json"}

    # Cached now: found with no network call at all.
    before = len(hub.requests)
    assert locate_model(resolve_model(TINY_REPO)) == (path, commit)
    assert cached_snapshot(TINY_REPO) == path
    assert len(hub.requests) == before


def test_hub_tokens_never_reach_the_cdn_and_lfs_files_come_from_it(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    download_model(tiny_spec())
    cdn = [r for r in hub.requests if r.server == "cdn"]
    assert [r.file for r in cdn] == ["model.safetensors"]
    assert all("authorization" not in r.headers for r in cdn)
    api = [r for r in hub.requests if r.server == "hub" and r.path.startswith("/api/models/")]
    assert api and all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in api)


def test_second_download_fetches_nothing(hub: FakeHub) -> None:
    download_model(tiny_spec())
    before = len([r for r in hub.requests if r.file])
    download_model(tiny_spec())
    assert len([r for r in hub.requests if r.file]) == before  # only the repo-info call


def test_connection_cut_mid_file_resumes_with_range(hub: FakeHub) -> None:
    hub.fault("cut", "model.safetensors", after=300_000, method="GET")
    path, _ = download_model(tiny_spec())
    gets = hub.file_requests("model.safetensors")
    cdn = [r for r in gets if r.server == "cdn"]
    assert len(cdn) == 2
    assert "range" not in cdn[0].headers and cdn[1].headers["range"] == "bytes=300000-"
    size = len(hub.repos[TINY_REPO].commits[path.name]["model.safetensors"].data)
    assert hub.served["model.safetensors"] == size  # nothing fetched twice
    assert verify_model(resolve_model(TINY_REPO)).healthy


def test_cancel_keeps_the_partial_file_and_the_next_run_resumes(hub: FakeHub) -> None:
    cancel = threading.Event()

    def on_progress(p: ByteProgress) -> None:
        if p.file == "model.safetensors" and p.done_bytes > 50_000:
            cancel.set()

    # Paced so progress is reported mid-file however fast the machine is.
    hub.fault("slow", "model.safetensors", method="GET")
    with pytest.raises(DownloadCancelled):
        download_model(tiny_spec(), on_progress=on_progress, cancel=cancel)
    partials = list((repo_folder(TINY_REPO) / "blobs").glob("*.incomplete"))
    assert len(partials) == 1
    kept = partials[0].stat().st_size
    assert 50_000 < kept < 1_284_516
    assert cached_snapshot(TINY_REPO) is None
    assert model_status(resolve_model(TINY_REPO)).state == "partial"

    download_model(tiny_spec())
    resumed = [r for r in hub.file_requests("model.safetensors") if r.server == "cdn"][-1]
    assert resumed.headers["range"] == f"bytes={kept}-"
    assert verify_model(resolve_model(TINY_REPO)).healthy
    assert not list((repo_folder(TINY_REPO) / "blobs").glob("*.incomplete"))


def test_5xx_answers_are_retried(hub: FakeHub) -> None:
    hub.fault("status", "model.safetensors", times=2, status=503, method="GET")
    hub.fault("status", "/api/models/", times=1, status=502)
    download_model(tiny_spec())
    assert len([r for r in hub.file_requests("model.safetensors") if r.server == "cdn"]) == 3
    assert cached_snapshot(TINY_REPO) is not None


def test_a_hub_that_keeps_failing_gives_a_clear_error_and_keeps_finished_files(
    hub: FakeHub,
) -> None:
    hub.fault("status", "model.safetensors", times=None, status=503, method="GET")
    with pytest.raises(DownloadError) as info:
        download_model(tiny_spec())
    message = str(info.value)
    assert "503" in message and "try again later" in message and "resumes" in message
    commit = hub.repos[TINY_REPO].refs["main"]
    assert (repo_folder(TINY_REPO) / "snapshots" / commit / "config.json").is_file()


def test_api_errors_after_retries_are_clear(hub: FakeHub) -> None:
    hub.fault("status", "/api/models/", times=None, status=500)
    with pytest.raises(DownloadError, match="HTTP 500"):
        download_model(tiny_spec())


def test_unknown_repo_and_unknown_revision(hub: FakeHub) -> None:
    with pytest.raises(UnknownModelError, match="does not exist on the Hub"):
        download_model(resolve_model("nobody/no-such-musicgen").spec)
    with pytest.raises(UnknownModelError, match="revision 'v9'"):
        download_model(replace(tiny_spec(), revision="v9"))


def test_a_body_that_does_not_match_its_hash_is_detected(hub: FakeHub) -> None:
    hub.fault("corrupt", "model.safetensors", times=None, method="GET")
    with pytest.raises(DownloadError, match="arrived damaged"):
        download_model(tiny_spec())
    blobs = repo_folder(TINY_REPO) / "blobs"
    assert not list(blobs.glob("*.incomplete"))
    assert not any(p.stat().st_size > 1_000_000 for p in blobs.iterdir())
    assert cached_snapshot(TINY_REPO) is None


def test_one_damaged_transfer_is_fetched_again(hub: FakeHub) -> None:
    hub.fault("corrupt", "config.json", times=1, method="GET")
    download_model(tiny_spec())
    assert len(hub.file_requests("config.json")) == 2
    assert verify_model(resolve_model(TINY_REPO)).healthy


def test_damaged_cached_file_is_reported_by_verify_and_fetched_again(hub: FakeHub) -> None:
    path, commit = download_model(tiny_spec())
    weights = (path / "model.safetensors").resolve()  # the blob behind the snapshot link
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0xFF
    weights.write_bytes(bytes(data))

    report = verify_model(resolve_model(TINY_REPO))
    assert [d.path for d in report.damaged] == ["model.safetensors"]
    assert "differs" in report.damaged[0].reason and len(report.ok) == 5
    assert cached_model(TINY_REPO).damaged == ("model.safetensors",)  # type: ignore[union-attr]
    assert cached_snapshot(TINY_REPO) is None  # not used until repaired

    before = {name: len(hub.file_requests(name)) for name in ENGINE_FILES}
    download_model(tiny_spec())
    after = {name: len(hub.file_requests(name)) for name in ENGINE_FILES}
    assert {n for n in ENGINE_FILES if after[n] > before[n]} == {"model.safetensors"}
    assert verify_model(resolve_model(TINY_REPO)).healthy
    assert load_manifest(TINY_REPO, commit).damaged == set()  # type: ignore[union-attr]


def test_pinned_revision_is_respected_and_recorded(hub: FakeHub, tiny_musicgen: Path) -> None:
    files = files_from_folder(tiny_musicgen)
    v1 = hub.add_commit(TINY_REPO, files, ref="v1")
    changed = {**files, "generation_config.json": b'{"max_length": 99}'}
    main = hub.add_commit(TINY_REPO, changed, ref="main")
    assert v1 != main

    pinned = replace(tiny_spec(), revision="v1")
    path, commit = download_model(pinned)
    assert commit == v1 and path.name == v1
    assert (repo_folder(TINY_REPO) / "refs" / "v1").read_text() == v1
    assert locate_model(replace(resolve_model(TINY_REPO), spec=pinned)) == (path, v1)
    assert cached_model(TINY_REPO) is None  # main was never downloaded

    by_hash = replace(tiny_spec(), revision=main)
    path, commit = download_model(by_hash)
    assert (
        commit == main
        and (path / "generation_config.json").read_bytes() == changed["generation_config.json"]
    )
    # The weights did not change between the commits: the blob is shared, not fetched again.
    assert len([r for r in hub.file_requests("model.safetensors") if r.server == "cdn"]) == 1


def test_refuses_when_the_disk_is_too_small(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DiskFullError, match="needs 1.2 MB") as info:
        download_model(tiny_spec())
    assert "HF_HUB_CACHE" in str(info.value)
    assert not [r for r in hub.requests if r.file]  # refused before fetching anything


def test_gated_repo_without_access_says_what_to_do(
    hub: FakeHub, tiny_musicgen: Path, monkeypatch: pytest.MonkeyPatch, capsys, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    hub.add_repo(
        "tiny/gated-musicgen", files_from_folder(tiny_musicgen), gated=True, tokens=(TOKEN,)
    )
    spec = resolve_model("tiny/gated-musicgen").spec

    with pytest.raises(GatedModelError) as no_token:
        download_model(spec)
    assert "accept its licence" in str(no_token.value) and "HF_TOKEN" in str(no_token.value)
    assert f"{hub.url}/tiny/gated-musicgen" in str(no_token.value)

    monkeypatch.setenv("HF_TOKEN", "hf_wrongTOKENwithoutAccess999")
    with pytest.raises(GatedModelError, match="has no access") as wrong:
        download_model(spec)

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    path, _ = download_model(spec)
    assert (path / "model.safetensors").is_file()

    out, err = capsys.readouterr()
    texts = [out, err, caplog.text]
    for exc in (no_token.value, wrong.value):
        texts.append("".join(traceback.format_exception(exc)))
    for text in texts:
        assert TOKEN not in text and "hf_wrongTOKEN" not in text


def test_a_token_the_hub_refuses_is_named_but_not_shown(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.valid_tokens = {TOKEN}
    monkeypatch.setenv("HF_TOKEN", "hf_revokedTOKEN42")
    with pytest.raises(GatedModelError, match="did not accept the token in HF_TOKEN") as info:
        download_model(tiny_spec())
    assert "hf_revokedTOKEN42" not in "".join(traceback.format_exception(info.value))


def test_hub_unreachable_says_what_is_cached(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    download_model(tiny_spec())
    hub.stop()
    with pytest.raises(ModelNotCachedError) as info:
        download_model(resolve_model("tiny/another-musicgen").spec)
    message = str(info.value)
    assert "cannot reach the Hub" in message and hub.url in message
    assert f"cached: {TINY_REPO}" in message and "models import" in message
    # what is cached still works, and downloading it again says so instead of failing blindly
    assert locate_model(resolve_model(TINY_REPO))[0].is_dir()
    with pytest.raises(ModelNotCachedError, match="keeps working offline"):
        download_model(tiny_spec())


def test_offline_mode_never_touches_the_network(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, commit = download_model(tiny_spec())
    go_offline(monkeypatch)
    before = len(hub.requests)
    assert download_model(tiny_spec()) == (path, commit)
    with pytest.raises(ModelNotCachedError, match="HF_HUB_OFFLINE is set"):
        locate_model(resolve_model("tiny/another-musicgen"))
    assert len(hub.requests) == before


def test_huggingface_hub_reads_what_the_store_writes_and_vice_versa(
    hub: FakeHub, tmp_path: Path
) -> None:
    from huggingface_hub import snapshot_download

    from samplemind_gen.store import ALLOW_PATTERNS, hub_cache_dir

    path, commit = download_model(tiny_spec())
    before = len(hub.requests)
    cache = hub_cache_dir()  # huggingface_hub read HF_HOME at import: pass the test's cache
    again = snapshot_download(
        TINY_REPO, revision=commit, allow_patterns=ALLOW_PATTERNS, endpoint=hub.url, cache_dir=cache
    )
    assert Path(again) == path
    assert not [r for r in hub.requests[before:] if r.method == "GET" and r.file]

    # A repo cached by huggingface_hub itself (no store manifest) is found and verifiable.
    hub.add_repo("tiny/other-tool", files_from_folder(path))
    snapshot_download(
        "tiny/other-tool", allow_patterns=ALLOW_PATTERNS, endpoint=hub.url, cache_dir=cache
    )
    other = cached_model("tiny/other-tool")
    assert other is not None and other.complete
    report = verify_model(resolve_model("tiny/other-tool"))
    assert report.healthy and len(report.ok) == len(ENGINE_FILES)


def test_generation_works_offline_after_download_with_the_server_stopped(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        from samplemind_gen.engines import LoadOptions, load_engine
        from samplemind_gen.engines.musicgen import MusicGenEngine  # noqa: F401
    except ImportError as exc:  # pragma: no cover - only while the engine is being written
        pytest.skip(f"MusicGen engine not importable: {exc}")
    from samplemind_gen.request import GenerationRequest

    _, commit = download_model(tiny_spec())
    hub.stop()
    go_offline(monkeypatch)
    engine = load_engine(resolve_model(TINY_REPO), LoadOptions(dtype="float32"))
    try:
        assert engine.revision == commit
        (take,) = engine.generate([GenerationRequest("dusty lofi drums", duration=0.5, seed=1)])
        assert take.audio.shape[0] == 1 and take.duration == pytest.approx(0.5, abs=0.05)
    finally:
        engine.close()


def test_locate_downloads_a_missing_model_when_allowed_and_honours_hf_hub_cache(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "big-disk"))
    with pytest.raises(ModelNotCachedError, match="downloads are off"):
        locate_model(resolve_model(TINY_REPO), allow_download=False)
    with caplog.at_level(logging.WARNING):
        path, commit = locate_model(resolve_model(TINY_REPO))
    assert "not downloaded yet; downloading it" in caplog.text
    assert path.is_relative_to(tmp_path / "big-disk") and path.name == commit
