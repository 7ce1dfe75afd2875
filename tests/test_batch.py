"""Batches: prompt files, the queue in the database, grouping, batched passes, resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from samplemind_gen.batch import BatchQueue, group_items, read_batch_file, run_batch
from samplemind_gen.cli.main import main
from samplemind_gen.engines.base import LoadOptions
from samplemind_gen.errors import BadInputError
from samplemind_gen.library import Library
from samplemind_gen.request import GenerationRequest
from samplemind_gen.service import AudioEngineWithGeneration

DEFAULTS = GenerationRequest("-", duration=0.3)


def test_text_jsonl_and_toml_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("# drums\nlofi drums\n\n  dark techno kick  \n")
    assert [s.request.prompt for s in read_batch_file(txt, DEFAULTS)] == [
        "lofi drums",
        "dark techno kick",
    ]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        '{"prompt": "bass", "duration": 1.5, "guidance": 4, "seed": 7, "variations": 2}\n'
        '"just a prompt"\n'
        '{"prompt": "loop", "loop_bars": 2, "bpm": 120, "normalize": -14, "tags": ["loops"]}\n'
    )
    a, b, c = read_batch_file(jsonl, DEFAULTS)
    assert a.request.duration == 1.5 and a.request.guidance_scale == 4 and a.request.seed == 7
    assert a.variations == 2 and b.request.prompt == "just a prompt" and b.request.duration == 0.3
    assert c.processing == {"loop_bars": 2, "bpm": 120, "normalize_lufs": -14}
    assert c.request.duration == pytest.approx(4.0 + 0.5 + 0.01 + 0.25)  # made long enough
    assert c.tags == ("loops",)
    toml = tmp_path / "p.toml"
    toml.write_text(
        "[defaults]\nduration = 2.0\ntemperature = 0.9\n[defaults.processing]\nfade_out = 0.2\n\n"
        '[[item]]\nprompt = "pad"\n\n[[item]]\nprompt = "kick"\nduration = 0.5\n'
        "[item.processing]\ntrim = true\n"
    )
    pad, kick = read_batch_file(toml, DEFAULTS)
    assert pad.request.duration == 2.0 and pad.request.temperature == 0.9
    assert kick.request.duration == 0.5 and kick.processing == {"fade_out": 0.2, "trim": True}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n{"prompt": "y", "colour": "red"}\n')
    with pytest.raises(BadInputError, match=r"bad.jsonl:2: unknown key 'colour'"):
        read_batch_file(bad, DEFAULTS)
    bad.write_text("{oops\n")
    with pytest.raises(BadInputError, match="bad.jsonl:1"):
        read_batch_file(bad, DEFAULTS)


def test_items_group_by_model_then_parameters():
    from samplemind_gen.batch import BatchItem

    def item(n: int, model: str, duration: float) -> BatchItem:
        request = GenerationRequest(f"p{n}", duration=duration, seed=n)
        return BatchItem(n, "b", n, model, request, {}, "pending")

    items = [item(0, "a", 1), item(1, "b", 1), item(2, "a", 2), item(3, "a", 1), item(4, "a", 1)]
    chunks = [[i.id for i in c] for c in group_items(items, batch_size=2)]
    assert chunks == [[0, 3], [4], [2], [1]]


def test_batched_pass_gives_the_same_takes_as_one_by_one(tiny_musicgen, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("lofi hip hop drums\ndark ambient pad\nwarm bass\n")
    results = {}
    for size in (3, 1):
        with Library(tmp_path / f"lib{size}.sqlite3") as lib:
            queue = BatchQueue(lib)
            specs = read_batch_file(prompts, GenerationRequest("-", duration=0.3, seed=5))
            batch_id = queue.create(
                specs, default_model=str(tiny_musicgen), out_dir=tmp_path / str(size)
            )

            class CountingService(AudioEngineWithGeneration):
                calls: list[int] = []

                def generate_blocking(self, requests, **kw):  # type: ignore[no-untyped-def]
                    self.calls.append(len(requests))
                    return super().generate_blocking(requests, **kw)

            service = CountingService(LoadOptions(dtype="float32"), analyze=False)
            service.calls = []
            info = run_batch(batch_id, library=lib, service=service, batch_size=size)
            assert info.counts == {"done": 3} and info.status == "done"
            assert service.calls == ([3] if size == 3 else [1, 1, 1])
            assert service.load_count == 1
            takes = [lib.get(i.take_id) for i in queue.items(batch_id)]
            results[size] = takes
    for batched, alone in zip(results[3], results[1], strict=True):
        a, b = batched.recipe.to_dict(), alone.recipe.to_dict()
        a.pop("created"), b.pop("created")
        assert a == b
        np.testing.assert_allclose(batched.load().audio, alone.load().audio, atol=1e-3)


def test_two_models_each_load_once(tiny_musicgen, tiny_musicgen_stereo, tmp_path):
    jsonl = tmp_path / "p.jsonl"
    lines = [
        {"prompt": "a", "model": str(tiny_musicgen)},
        {"prompt": "b", "model": str(tiny_musicgen_stereo)},
        {"prompt": "c", "model": str(tiny_musicgen)},
    ]
    jsonl.write_text("\n".join(json.dumps(x) for x in lines))
    code = main(
        [
            "batch",
            str(jsonl),
            "--duration",
            "0.2",
            "--dtype",
            "float32",
            "--json",
            "--out-dir",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    with Library() as lib:
        takes = lib.find(order="oldest")
        assert [t.prompt for t in takes] == ["a", "c", "b"]  # grouped by model
        assert {t.recipe.channels for t in takes} == {1, 2}
        assert all(t.batch_id for t in takes)


def _spawn_batch(prompts: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "samplemind_gen",
            "batch",
            str(prompts),
            "--model",
            os.environ["SMG_TEST_MODEL"],
            "--duration",
            "0.3",
            "--dtype",
            "float32",
            "--batch-size",
            "1",
            "--out-dir",
            str(out),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ},
    )


def _wait_for_done(proc: subprocess.Popen[str], count: int) -> list[str]:
    assert proc.stderr is not None
    done: list[str] = []
    deadline = time.monotonic() + 300
    while len(done) < count and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if re.match(r"\[\d+/\d+\] ", line):
            done.append(line)
    return done


def test_resume_after_a_kill_redoes_nothing_finished(capsys, tiny_musicgen, tmp_path, monkeypatch):
    how = signal.SIGKILL
    monkeypatch.setenv("SMG_TEST_MODEL", str(tiny_musicgen))
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(f"prompt number {i}" for i in range(6)) + "\n")
    out = tmp_path / "out"
    proc = _spawn_batch(prompts, out)
    done = _wait_for_done(proc, 2)
    proc.send_signal(how)
    code = proc.wait(timeout=120)
    assert len(done) == 2, "the batch never got going"
    assert code == -signal.SIGKILL
    with Library() as lib:
        before = {t.id: (t.path, t.audio_sha256) for t in lib.find()}
        (info,) = BatchQueue(lib).batches()
        assert info.counts.get("done", 0) == len(before) >= 2
    assert main(["batch", "--resume", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["counts"] == {"done": 6} and result["status"] == "done"
    with Library() as lib:
        after = {t.id: (t.path, t.audio_sha256) for t in lib.find()}
    assert len(after) == 6
    for take_id, value in before.items():  # nothing finished was redone or lost
        assert after[take_id] == value
    wavs = sorted(p.name for p in out.glob("*.wav"))
    assert len(wavs) == 6, wavs
    # Nothing left: resuming again has nothing to do.
    code = main(["batch", "--resume"])
    assert code == 2


def test_cancel_puts_running_items_back_and_resume_finishes(tiny_musicgen, tmp_path):
    import threading

    from samplemind_gen.batch import BatchEvent
    from samplemind_gen.errors import GenerationCancelled

    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ntwo\nthree\nfour\n")
    cancel = threading.Event()

    def stop_after_two(event: BatchEvent) -> None:
        if event.kind == "done" and event.done == 2:
            cancel.set()  # as Escape in the TUI or Ctrl-C in the CLI would

    with Library() as lib:
        queue = BatchQueue(lib)
        specs = read_batch_file(prompts, GenerationRequest("-", duration=0.3))
        batch_id = queue.create(specs, default_model=str(tiny_musicgen), out_dir=tmp_path / "o")
        service = AudioEngineWithGeneration(LoadOptions(dtype="float32"), analyze=False)
        with pytest.raises(GenerationCancelled):
            run_batch(
                batch_id,
                library=lib,
                service=service,
                batch_size=1,
                on_event=stop_after_two,
                cancel=cancel,
            )
        info = queue.info(batch_id)
        assert info.counts == {"done": 2, "pending": 2} and info.status == "stopped"
        seeds = [i.request.seed for i in queue.items(batch_id)]
        cancel.clear()
        info = run_batch(batch_id, library=lib, service=service, batch_size=1)
        assert info.counts == {"done": 4} and info.status == "done"
        # The seeds were drawn when the batch was queued: resuming makes the same takes.
        assert [i.request.seed for i in queue.items(batch_id)] == seeds
        assert lib.count() == 4 and service.load_count == 1
        # Queue edits: cancel and reorder pending items.
        more = queue.create(specs, default_model=str(tiny_musicgen), out_dir=tmp_path / "o")
        items = queue.items(more)
        queue.cancel([items[0].id])
        queue.move(items[3].id, 0)
        order = [(i.request.prompt, i.status) for i in queue.items(more)]
        assert order == [
            ("four", "pending"),
            ("one", "cancelled"),
            ("two", "pending"),
            ("three", "pending"),
        ]


def test_example_prompt_files_all_parse():
    folder = Path(__file__).resolve().parents[1] / "examples" / "prompts"
    files = sorted(p for p in folder.iterdir() if p.suffix in (".txt", ".jsonl", ".toml"))
    assert {p.stem for p in files} >= {"drums", "bass", "pads", "textures", "foley", "genres"}
    for path in files:
        specs = read_batch_file(path, DEFAULTS)
        assert specs, path
        for spec in specs:
            from samplemind_gen.dsp import Processing
            from samplemind_gen.request import validate_request

            validate_request(spec.request, max_duration=30.0)
            Processing.from_dict(spec.processing)


def test_items_beyond_the_window_go_long_form(tiny_musicgen, tmp_path):
    from dataclasses import replace

    from samplemind_gen.catalog import ResolvedModel

    class OneSecondWindow(AudioEngineWithGeneration):
        """The tiny model as if its window were 1 s, so a 1.6 s item needs two windows."""

        def resolve(self, model):  # type: ignore[no-untyped-def]
            r = super().resolve(model)
            return ResolvedModel(replace(r.spec, max_duration=1.0), r.local_path)

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "long pad", "duration": 1.6, "seed": 4}\n')
    with Library() as lib:
        queue = BatchQueue(lib)
        specs = read_batch_file(prompts, DEFAULTS)
        batch_id = queue.create(specs, default_model=str(tiny_musicgen), out_dir=tmp_path / "o")
        service = OneSecondWindow(LoadOptions(dtype="float32"), analyze=False)
        info = run_batch(batch_id, library=lib, service=service)
        assert info.counts == {"done": 1}
        (take,) = lib.find()
        assert take.recipe.params["long_form"]["window"] == 1.0
        assert take.load().audio.shape[1] == int(1.6 * 32000)
