"""The result cache: an identical request is answered from the library without loading the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from samplemind_gen.cli.main import main
from samplemind_gen.engines.base import LoadOptions
from samplemind_gen.finishing import finish_take
from samplemind_gen.library import Library
from samplemind_gen.request import GenerationRequest
from samplemind_gen.reuse import generate_or_reuse, was_reused
from samplemind_gen.service import AudioEngineWithGeneration


def test_identical_request_is_served_from_the_library_without_loading(tiny_musicgen, tmp_path):
    request = GenerationRequest("lofi hip hop drums", duration=0.3, seed=21)
    with Library() as lib:
        first_service = AudioEngineWithGeneration(LoadOptions(dtype="float32"), analyze=False)
        (fresh,) = generate_or_reuse(
            first_service, [request], library=lib, model=str(tiny_musicgen)
        )
        assert not was_reused(fresh) and fresh.path is None
        finish_take(fresh, tmp_path, library=lib, fmt="wav32f")

        service = AudioEngineWithGeneration(LoadOptions(dtype="float32"), analyze=False)
        other = GenerationRequest("lofi hip hop drums", duration=0.3, seed=22)
        again, new = generate_or_reuse(
            service, [request, other], library=lib, model=str(tiny_musicgen)
        )
        assert was_reused(again) and again.id == fresh.id and again.path == fresh.path
        np.testing.assert_array_equal(again.audio, fresh.audio)
        assert not was_reused(new) and new.seed == 22
        # Only the new seed needed the model.
        assert service.load_count == 1

        cached_only = AudioEngineWithGeneration(LoadOptions(dtype="float32"), analyze=False)
        (hit,) = generate_or_reuse(cached_only, [request], library=lib, model=str(tiny_musicgen))
        assert was_reused(hit) and cached_only.load_count == 0

        # Another dtype, a changed parameter or a changed file is not the same take.
        bf16 = AudioEngineWithGeneration(LoadOptions(dtype="bfloat16"), analyze=False)
        (miss,) = generate_or_reuse(bf16, [request], library=lib, model=str(tiny_musicgen))
        assert not was_reused(miss) and miss.recipe.dtype == "bfloat16"
        hotter = GenerationRequest("lofi hip hop drums", duration=0.3, seed=21, temperature=0.9)
        assert lib.find_cached("x") is None
        (miss2,) = generate_or_reuse(cached_only, [hotter], library=lib, model=str(tiny_musicgen))
        assert not was_reused(miss2)
        Path(fresh.path).write_bytes(b"RIFF")  # damaged on disk: regenerate
        (miss3,) = generate_or_reuse(
            AudioEngineWithGeneration(LoadOptions(dtype="float32"), analyze=False),
            [request],
            library=lib,
            model=str(tiny_musicgen),
        )
        assert not was_reused(miss3)


def test_cli_generate_records_takes_and_reuses_a_fixed_seed(capsys, tiny_musicgen, tmp_path):
    argv = [
        "generate",
        "dark techno",
        "--model",
        str(tiny_musicgen),
        "--duration",
        "0.3",
        "--seed",
        "9",
        "--dtype",
        "float32",
        "--output",
        str(tmp_path / "a"),
        "--json",
    ]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    out, err = capsys.readouterr()
    second = json.loads(out)
    assert "reused from the library" in err
    assert second["id"] == first["id"]
    with Library() as lib:
        assert lib.count() == 1
        entry = lib.get(first["id"])
        assert str(entry.path) == first["path"] and entry.recipe.seed == 9
    assert main([*argv, "--no-reuse"]) == 0
    third = json.loads(capsys.readouterr().out)
    assert third["id"] != first["id"]
    # A random seed always makes something new, and it is recorded too.
    assert main(argv[:6] + argv[8:]) == 0
    capsys.readouterr()
    with Library() as lib:
        assert lib.count() == 3


def test_auto_dtype_is_predicted_as_the_engine_picks_it(tiny_musicgen, tmp_path):
    request = GenerationRequest("warm pad", duration=0.2, seed=3)
    with Library() as lib:
        auto = AudioEngineWithGeneration(LoadOptions(), analyze=False)
        (fresh,) = generate_or_reuse(auto, [request], library=lib, model=str(tiny_musicgen))
        finish_take(fresh, tmp_path, library=lib)
        again = AudioEngineWithGeneration(LoadOptions(), analyze=False)
        (hit,) = generate_or_reuse(again, [request], library=lib, model=str(tiny_musicgen))
        assert was_reused(hit) and hit.recipe.dtype == fresh.recipe.dtype
        assert again.load_count == 0
