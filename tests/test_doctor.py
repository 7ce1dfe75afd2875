"""`samplemind-gen doctor`: what it reports is what a take then runs on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from samplemind_gen.cli.main import main


def doctor_json(capsys) -> dict:  # type: ignore[no-untyped-def]
    assert main(["doctor", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_doctor_reports_the_machine_and_its_folders(capsys, tmp_path: Path):
    from samplemind_gen import paths
    from samplemind_gen.engines import native_kernels

    data = doctor_json(capsys)
    assert data["versions"]["samplemind-gen"] and data["versions"]["torch"]
    assert data["device"] == "cpu" and data["cpu"]["cores"] >= 1
    assert data["kernels"]["built"] == native_kernels.available()
    if data["kernels"]["built"]:
        assert data["kernels"]["isa"] == native_kernels.isa()
    assert data["paths"]["library"] == str(paths.library_db())
    assert data["offline"] is True  # the tests run with HF_HUB_OFFLINE=1
    assert main(["doctor"]) == 0
    text = capsys.readouterr().out
    assert "CPU kernels" in text and "MusicGen" in text and "--quantize int8" in text


def test_doctor_names_the_kernels_a_take_then_records(capsys, tiny_musicgen: Path):
    """The dtype and kernels the report predicts for each mode are those of takes made so."""
    from samplemind_gen.engines import LoadOptions
    from samplemind_gen.request import GenerationRequest
    from samplemind_gen.service import AudioEngineWithGeneration

    modes = doctor_json(capsys)["musicgen"]
    request = GenerationRequest("lofi hip hop drums", duration=0.2, seed=3)
    for mode, options in (
        ("default", LoadOptions()),
        ("int8", LoadOptions(quantize="int8")),
        ("int4", LoadOptions(quantize="int4")),
        ("float32", LoadOptions(dtype="float32")),
    ):
        service = AudioEngineWithGeneration(options, analyze=False)
        (take,) = service.generate_blocking(request, model=str(tiny_musicgen))
        assert take.recipe.kernels == modes[mode]["kernels"]
        assert take.recipe.dtype == modes[mode]["dtype"]


def test_doctor_says_why_the_kernels_are_not_used():
    done = subprocess.run(
        [sys.executable, "-m", "samplemind_gen", "doctor"],
        env={**os.environ, "SAMPLEMIND_GEN_NATIVE_KERNELS": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "not used: switched off by SAMPLEMIND_GEN_NATIVE_KERNELS" in done.stdout
    assert "--quantize int8: float16+int8 on fbgemm" in done.stdout
