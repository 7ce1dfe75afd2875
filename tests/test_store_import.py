"""Importing checkpoint folders for machines that never see the Hub."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from samplemind_gen.catalog import CATALOG, resolve_model
from samplemind_gen.errors import BadInputError, ModelFilesError, ModelNotCachedError
from samplemind_gen.store import list_models, locate_model, model_status, remove_model, verify_model
from samplemind_gen.store.importer import import_model, imported_model, store_dir


@pytest.fixture
def checkpoint(tiny_musicgen: Path, tmp_path: Path) -> Path:
    """The tiny checkpoint plus files an import must leave behind."""
    folder = tmp_path / "usb" / "my-checkpoint"
    shutil.copytree(tiny_musicgen, folder)
    (folder / "pytorch_model.bin").write_bytes(b"pickle" * 100)
    (folder / "README.md").write_text("# notes")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "junk.json").write_text("{}")
    return folder


def test_import_copies_engine_files_and_the_name_resolves(checkpoint: Path) -> None:
    reports = []
    model = import_model(checkpoint, "my-drums", on_progress=reports.append)
    assert model.path == store_dir() / "imported" / "my-drums"
    copied = {p.relative_to(model.path).as_posix() for p in model.path.rglob("*") if p.is_file()}
    assert "model.safetensors" in copied and "config.json" in copied
    assert not {"pytorch_model.bin", "README.md", ".cache/junk.json"} & copied
    assert reports[-1].done_bytes == reports[-1].total_bytes == model.size_bytes

    resolved = resolve_model("my-drums")
    assert resolved.local_path == model.path and resolved.spec.family == "musicgen"
    assert locate_model(resolved, allow_download=False) == (model.path, None)
    assert model_status(resolved).state == "imported"
    assert "my-drums" in [s.name for s in list_models()]
    assert verify_model(resolved).healthy

    shutil.rmtree(checkpoint)  # the source can go away: the store has its own copy
    assert verify_model(resolve_model("my-drums")).healthy

    freed = remove_model(resolve_model("my-drums"))
    assert freed == model.size_bytes
    assert not model.path.exists() and imported_model("my-drums") is None


def test_import_under_a_catalog_name_makes_it_work_offline(checkpoint: Path) -> None:
    with pytest.raises(ModelNotCachedError):
        locate_model(resolve_model("musicgen-small"))  # HF_HUB_OFFLINE=1 in tests
    model = import_model(checkpoint, "musicgen-small")
    resolved = resolve_model("musicgen-small")
    assert resolved.spec == CATALOG["musicgen-small"]  # still the catalog entry
    assert locate_model(resolved) == (model.path, None)
    status = model_status(resolved)
    assert status.state == "imported" and status.in_catalog
    listed = {s.name: s for s in list_models()}
    assert listed["musicgen-small"].state == "imported"
    assert verify_model(resolved).healthy


def test_link_registers_the_folder_in_place(checkpoint: Path) -> None:
    model = import_model(checkpoint, "linked-one", link=True)
    assert model.path == checkpoint.resolve() and model.linked
    assert not (store_dir() / "imported" / "linked-one").exists()
    assert resolve_model("linked-one").local_path == checkpoint.resolve()
    assert remove_model(resolve_model("linked-one")) == 0
    assert (checkpoint / "model.safetensors").is_file()  # a linked source is never deleted


def test_import_from_a_hub_snapshot_records_its_commit(checkpoint: Path, tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "copied-cache" / "snapshots" / commit
    shutil.copytree(checkpoint, snapshot)
    import_model(snapshot, "from-cache")
    assert locate_model(resolve_model("from-cache"))[1] == commit


def test_verify_finds_damage_in_an_imported_copy(checkpoint: Path) -> None:
    model = import_model(checkpoint, "fragile")
    (model.path / "tokenizer.json").write_text("{}")
    (model.path / "generation_config.json").unlink()
    report = verify_model(resolve_model("fragile"))
    assert [d.path for d in report.damaged] == ["tokenizer.json"]
    assert report.missing == ("generation_config.json",) and report.source == "imported"


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        ("has/slash", BadInputError, "cannot be a model name"),
        ("audioldm2", BadInputError, "is a audioldm2 model"),
    ],
)
def test_import_refuses_bad_names(checkpoint: Path, name: str, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        import_model(checkpoint, name)


def test_import_refuses_folders_it_cannot_use(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not a folder"):
        import_model(tmp_path / "nothing-here", "x")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFilesError, match="no config.json"):
        import_model(empty, "x")
    (checkpoint / "model.safetensors").unlink()
    with pytest.raises(ModelFilesError, match="no .safetensors"):
        import_model(checkpoint, "x")


def test_import_twice_under_one_name_is_refused(checkpoint: Path) -> None:
    import_model(checkpoint, "twice")
    with pytest.raises(BadInputError, match="already imported"):
        import_model(checkpoint, "twice")
