"""The `generate` command end to end on the tiny checkpoint, and every bad input it refuses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from samplemind_gen.cli.main import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_generate_json_writes_an_analysed_take_with_its_recipe(capsys, tiny_musicgen, tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = run_cli(
        capsys,
        "generate",
        "lofi hip hop drums",
        "--model",
        str(tiny_musicgen),
        "--duration",
        "0.5",
        "--seed",
        "42",
        "--dtype",
        "float32",
        "--output",
        str(out_dir),
        "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    for key in (
        "path",
        "model",
        "revision",
        "sample_rate",
        "channels",
        "duration",
        "seed",
        "params",
        "features",
        "timings",
    ):
        assert key in data
    assert data["seed"] == 42 and data["sample_rate"] == 32000 and data["channels"] == 1
    assert data["duration"] == pytest.approx(0.5)
    assert data["params"]["guidance_scale"] == 3.0
    path = Path(data["path"])
    assert path.parent == out_dir and path.is_file()
    from samplemind_gen.export import read_recipe

    embedded = read_recipe(path)
    recipe = embedded.get("recipe", embedded)
    assert recipe["prompt"] == "lofi hip hop drums" and recipe["seed"] == 42
    assert recipe["dtype"] == "float32" and recipe["device"] == "cpu"


def test_generate_same_seed_gives_the_same_audio(capsys, tiny_musicgen, tmp_path):
    import soundfile as sf

    paths = []
    for name in ("a.wav", "b.wav"):
        code, out, err = run_cli(
            capsys,
            "generate",
            "dusty vinyl jazz",
            "--model",
            str(tiny_musicgen),
            "--duration",
            "0.3",
            "--seed",
            "5",
            "--dtype",
            "float32",
            "--format",
            "wav32f",
            "--output",
            str(tmp_path / name),
            "--json",
        )
        assert code == 0, err
        paths.append(json.loads(out)["path"])
    a, _ = sf.read(paths[0])
    b, _ = sf.read(paths[1])
    assert (a == b).all()


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_modes_record_their_mode_and_regenerate_exactly(
    capsys, tiny_musicgen, tmp_path, mode
):
    """`--quantize` is part of the recipe, and `library regenerate` loads the same mode."""
    import soundfile as sf

    code, out, err = run_cli(
        capsys,
        "generate",
        "dusty vinyl jazz",
        "--model",
        str(tiny_musicgen),
        "--duration",
        "0.3",
        "--seed",
        "5",
        "--quantize",
        mode,
        "--format",
        "wav32f",
        "--output",
        str(tmp_path / "a.wav"),
        "--json",
    )
    assert code == 0, err
    take = json.loads(out)
    from samplemind_gen.export import read_recipe

    embedded = read_recipe(Path(take["path"]))
    recipe = embedded.get("recipe", embedded)
    base = "bfloat16" if mode == "int4" else "float16"
    assert recipe["dtype"] == f"{base}+{mode}" and recipe["device"] == "cpu"
    code, out, err = run_cli(capsys, "library", "list", "--json")
    assert code == 0, err
    listed = json.loads(out)
    take_id = (listed["takes"] if isinstance(listed, dict) else listed)[0]["id"]
    code, out, err = run_cli(
        capsys, "library", "regenerate", str(take_id), "--output", str(tmp_path / "b"), "--json"
    )
    assert code == 0, err
    again = json.loads(out)
    a, _ = sf.read(take["path"])
    b, _ = sf.read(again["path"] if "path" in again else again["takes"][0]["path"])
    assert (a == b).all()


def test_several_prompts_run_as_one_batch(capsys, tiny_musicgen, tmp_path):
    code, out, err = run_cli(
        capsys,
        "generate",
        "warm pad",
        "punchy kick",
        "--model",
        str(tiny_musicgen),
        "--duration",
        "0.2",
        "--output",
        str(tmp_path),
        "--json",
        "--dtype",
        "float32",
    )
    assert code == 0, err
    takes = json.loads(out)["takes"]
    assert [t["prompt"] for t in takes] == ["warm pad", "punchy kick"]
    assert all(Path(t["path"]).is_file() for t in takes)


def test_long_prompt_is_truncated_with_a_warning(capsys, tiny_musicgen, tmp_path):
    code, _, err = run_cli(
        capsys,
        "generate",
        " ".join(["warm dusty vinyl jazz chords"] * 200),
        "--model",
        str(tiny_musicgen),
        "--duration",
        "0.1",
        "--output",
        str(tmp_path),
    )
    assert code == 0
    assert "warning:" in err and "cut off" in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["   "], "prompt is empty"),
        (["x", "--duration", "0"], "duration"),
        (["x", "--duration", "-1"], "duration"),
        (["x", "--duration", "nan"], "duration"),
        (["x", "--duration", "700"], "limit"),
        (["x", "--temperature", "0"], "temperature"),
        (["x", "--top-p", "0"], "top-p"),
        (["x", "--top-p", "1.5"], "top-p"),
        (["x", "--seed", "-1"], "seed"),
        (["x", "--seed", str(2**32)], "seed"),
        (["x", "--format", "mp3"], "format"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_file(capsys, tiny_musicgen, tmp_path, args, needle):
    out_dir = tmp_path / "out"
    code, out, err = run_cli(
        capsys, "generate", *args, "--model", str(tiny_musicgen), "--output", str(out_dir)
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0].lower()
    assert files_in(out_dir) == []


def test_unknown_model_name(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "generate", "x", "--model", "musicgen-tiny-xyz", "-o", str(tmp_path)
    )
    assert code == 2 and "unknown model" in err and "models list" in err


def test_output_folder_not_writable(capsys, tiny_musicgen, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    code, _, err = run_cli(
        capsys,
        "generate",
        "x",
        "--model",
        str(tiny_musicgen),
        "--duration",
        "0.1",
        "--output",
        str(blocker / "sub"),
    )
    assert code == 2 and "cannot write" in err


def test_model_folder_missing_weights(capsys, tiny_musicgen, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_musicgen, broken)
    (broken / "model.safetensors").unlink()
    out_dir = tmp_path / "out"
    code, _, err = run_cli(capsys, "generate", "x", "--model", str(broken), "-o", str(out_dir))
    assert code == 2 and "safetensors" in err
    assert files_in(out_dir) == []


def test_model_folder_with_corrupt_weights(capsys, tiny_musicgen, tmp_path):
    broken = tmp_path / "corrupt"
    shutil.copytree(tiny_musicgen, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    out_dir = tmp_path / "out"
    code, _, err = run_cli(capsys, "generate", "x", "--model", str(broken), "-o", str(out_dir))
    assert code == 2 and "damaged" in err
    assert files_in(out_dir) == []


def test_model_folder_without_config(capsys, tmp_path):
    folder = tmp_path / "empty-model"
    folder.mkdir()
    code, _, err = run_cli(capsys, "generate", "x", "--model", str(folder), "-o", str(tmp_path))
    assert code == 2 and "config.json" in err


def test_not_cached_while_offline_says_how_to_fix(capsys, tmp_path):
    out_dir = tmp_path / "out"
    code, _, err = run_cli(capsys, "generate", "x", "--model", "musicgen-small", "-o", str(out_dir))
    assert code == 2
    assert "not downloaded" in err and "--model PATH" in err
    assert files_in(out_dir) == []


def test_not_cached_and_hub_unreachable(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "2")
    code, _, err = run_cli(
        capsys, "generate", "x", "--model", "musicgen-small", "-o", str(tmp_path)
    )
    assert code == 2
    assert "unreachable" in err or "not downloaded" in err


def test_help_is_fast_and_imports_no_torch():
    code = (
        "import sys, time; t=time.perf_counter(); from samplemind_gen.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy=[m for m in ('torch','transformers','diffusers','librosa','textual') if m in sys.modules]\n"
        "print(heavy, time.perf_counter()-t, file=sys.stderr)\n"
        "sys.exit(1 if heavy else 0)"
    )
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage: samplemind-gen" in proc.stdout
    assert time.perf_counter() - started < 5  # the interpreter itself dominates; see stderr


@pytest.mark.parametrize("when", ["step", "analysing"])
def test_ctrl_c_exits_130_and_leaves_no_partial_file(tiny_musicgen, tmp_path, when):
    """Ctrl-C while the take is generated, or while it is analysed (where numba, compiling
    librosa's kernels, can swallow the KeyboardInterrupt inside its C callback): exit 130 and
    nothing written."""
    out_dir = tmp_path / "out"
    env = dict(os.environ)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "samplemind_gen",
            "generate",
            "long take",
            "--model",
            str(tiny_musicgen),
            "--duration",
            "30",
            "--output",
            str(out_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 120
    # Wait until generation is under way (the progress line names steps), then interrupt.
    buf = ""
    assert proc.stderr is not None
    while time.time() < deadline and when not in buf:
        ch = proc.stderr.read(1)
        if not ch:
            break
        buf += ch
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130, buf + rest
    assert files_in(out_dir) == []
