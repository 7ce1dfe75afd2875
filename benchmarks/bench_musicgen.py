"""MusicGen speed, side by side in one run: transformers' `generate` (fp32, the baseline) against
each of samplemind-gen's modes, on the real musicgen-small architecture with random weights.

    .venv/bin/python benchmarks/bench_musicgen.py                       # 2.5 s takes, 3 rounds
    .venv/bin/python benchmarks/bench_musicgen.py --duration 8 --modes baseline,bf16,bf16-plain,fp16,int8,int4
    .venv/bin/python benchmarks/bench_musicgen.py --modes baseline,fp32,fp32-hf,bf16,bf16-hf

Each mode lives in its own worker process (so each peak RSS is that mode's alone), all loaded up
front; the parent then runs round 1 of every mode, round 2 of every mode, ... one worker at a time.
This machine's CPU speed drifts several-fold minute to minute, so numbers are medians over rounds,
and speedups are medians of per-round ratios against the baseline run in the same round.

Modes: baseline (transformers generate, fp32), fp32, bf16, fp16 (fp16 weights, fp32 math: the CPU
default where there is no native bf16; both on samplemind-gen's half_linear kernel), int8, int4 (ours, streaming on, CFG 3; int8 and int4 on samplemind-gen's VNNI kernels where the CPU
has AVX512-VNNI, "int8-fbgemm" and "int4-aten" on PyTorch's kernels instead), "-hf" variants of ours that step transformers' own decoder forward instead of CachedDecoder (fp32
and bf16 only: the packed modes fuse q/k/v, which that forward cannot run), "bf16-plain": our
loop over plain bf16 modules (what bf16 is without oneDNN weight packing), and
"-unfused" variants of bf16, int8 and int4: the step on PyTorch's sdpa (bf16 caches), layer
norm, add and GELU instead of samplemind-gen's step ops (one op per attention, int8 caches in the
quantized modes, add + layer norm fused, GELU inside the fc1 kernel), and "bf16-lib" / "fp16-lib":
bf16 on oneDNN and fp16 on fbgemm instead of samplemind-gen's half_linear kernel, and
"bf16-noamx" / "int8-noamx": samplemind-gen's kernels with AMX tiles switched off
(`SAMPLEMIND_GEN_AMX=0`; only CPUs with AMX differ), "bf16-perop" / "int8-perop": the step ops
called one by one from Python instead of every decoder layer in one call (`decoder_layers`),
"bf16-nocompact": bf16 weights in their 16 bits (`half_linear`) instead of 12 (`compact_linear`,
lossless; CPUs with AVX512-BF16), "-nofold" variants of bf16, int8 and int4: the prompt's
cross-attention as attention instead of folded into two small linears (SAMPLEMIND_GEN_FOLD_CROSS=0),
"-trim128k" variants of bf16 and int8: glibc's trim threshold left at its 128 KB default while
generating (freed heap tops handed back on each free, as before 2026-12-06's eleventh session),
"-l1" / "-nol1" variants of bf16 and int8: the int8 and compact bf16 kernels' L1 prefetch of the
next block forced on / off (SAMPLEMIND_GEN_L1_PREFETCH; by default off on AMD, on elsewhere).
`--takes 4` makes each call a batch of 4 takes.
The checkpoint (about 2.3 GB) is built once into --checkpoint and reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_CHECKPOINT = Path("/tmp/musicgen-small-arch")
PROMPT = "warm dusty lofi hip hop drums with a deep bass and vinyl crackle"
MODES = (
    "baseline",
    "fp32",
    "bf16",
    "fp16",
    "int8",
    "int4",
    "bf16-plain",
    "int8-fbgemm",
    "int4-aten",
    # ours on PyTorch's sdpa (bf16 caches), layer norm, add and GELU instead of samplemind-gen's
    # step ops (kernels/step_ops.cpp)
    "bf16-unfused",
    "int8-unfused",
    "int4-unfused",
    # bf16 / fp16 linear layers on oneDNN / fbgemm instead of samplemind-gen's half_linear
    "bf16-lib",
    "fp16-lib",
    # samplemind-gen's kernels without AMX tiles (Xeons since Sapphire Rapids)
    "bf16-noamx",
    "int8-noamx",
    # bf16 weights in their 16 bits instead of compact (12 bits, lossless)
    "bf16-nocompact",
    # cross-attention over the prompt as attention, not folded into two small linears
    "bf16-nofold",
    "int8-nofold",
    "int4-nofold",
    # glibc's trim threshold at its 128 KB default while generating
    "bf16-trim128k",
    "int8-trim128k",
    # the int8 / compact kernels' L1 prefetch of the next block forced on / off
    "bf16-l1",
    "int8-l1",
    "bf16-nol1",
    "int8-nol1",
    # the step ops called one by one from Python instead of all layers in one call
    "bf16-perop",
    "int8-perop",
    "bf16-hf",
    "fp32-hf",
    # CUDA (a GPU machine): transformers' generate in fp32 and fp16, ours in fp16 and bf16 with
    # the decode step in a CUDA graph. Compare cuda-* modes with cuda-baseline.
    "cuda-baseline",
    "cuda-baseline16",
    "cuda-fp16",
    "cuda-bf16",
    # ours in fp16 with only the decoder step graphed (sampling in Python, as before the
    # whole-step graph), and with the step compiled by Inductor before capture
    "cuda-fp16-stepgraph",
    "cuda-fp16-compile",
)


# ------------------------------------------------------------------------------------- worker
def cpu_options(base: str):  # type: ignore[no-untyped-def]
    """The LoadOptions of a CPU mode's base name (fp32, bf16, fp16, int8, int4)."""
    from samplemind_gen.engines import LoadOptions

    return {
        "fp32": LoadOptions(device="cpu", dtype="float32"),
        "bf16": LoadOptions(device="cpu", dtype="bfloat16"),
        "fp16": LoadOptions(device="cpu", dtype="float16"),
        "int8": LoadOptions(device="cpu", quantize="int8"),
        "int4": LoadOptions(device="cpu", quantize="int4"),
    }[base]


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Linux: restart the VmHWM (peak RSS) counter, so later peaks are generation-only."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def vm_hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(mode: str, checkpoint: Path) -> None:
    """Load one mode, then answer each line on stdin ("<duration>") with one JSON result line."""
    if "baseline" not in mode:  # what samplemind-gen's front ends do (transformers: no change)
        from samplemind_gen.devices import keep_cpu_threads_warm

        keep_cpu_threads_warm()
    import torch

    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    cuda = mode.startswith("cuda-")
    if mode in ("baseline", "cuda-baseline", "cuda-baseline16"):
        from transformers import AutoProcessor, MusicgenForConditionalGeneration

        dtype = torch.float16 if mode == "cuda-baseline16" else torch.float32
        model = MusicgenForConditionalGeneration.from_pretrained(checkpoint, dtype=dtype)
        model.to("cuda" if cuda else "cpu").eval()
        processor = AutoProcessor.from_pretrained(checkpoint)
        run = baseline_runner(model, processor)
    elif cuda:
        from samplemind_gen.catalog import resolve_model
        from samplemind_gen.engines import LoadOptions, load_engine

        _, precision, *variant = mode.split("-")
        dtype = "float16" if precision == "fp16" else "bfloat16"
        options = LoadOptions("cuda", dtype, compile=variant == ["compile"])
        engine = load_engine(resolve_model(str(checkpoint)), options)
        if variant == ["stepgraph"]:  # the decoder step alone in a graph, sampling outside
            engine.graph_whole_step = False
        run = engine_runner(engine)
    else:
        from samplemind_gen.catalog import resolve_model
        from samplemind_gen.engines import load_engine

        base, _, variant = mode.partition("-")
        options = cpu_options(base)
        if variant in ("hf", "plain"):  # plain modules, no packed kernels
            options = dataclasses.replace(options, pack=False)
        if variant in ("fbgemm", "aten"):  # PyTorch's int8/int4 kernels, not our VNNI ones
            os.environ["SAMPLEMIND_GEN_NATIVE_KERNELS"] = "0"
        if variant == "noamx":  # samplemind-gen's kernels without AMX tiles
            os.environ["SAMPLEMIND_GEN_AMX"] = "0"
        if variant == "nocompact":  # bf16 weights in 16 bits (half_linear)
            os.environ["SAMPLEMIND_GEN_COMPACT_BF16"] = "0"
        if variant == "nofold":  # the prompt's cross-attention not folded into two linears
            os.environ["SAMPLEMIND_GEN_FOLD_CROSS"] = "0"
        if variant in ("l1", "nol1"):  # the kernels' L1 prefetch forced on / off
            os.environ["SAMPLEMIND_GEN_L1_PREFETCH"] = "1" if variant == "l1" else "0"
        if variant == "trim128k":  # limit_heap_retention leaves the trim threshold alone
            os.environ["MALLOC_TRIM_THRESHOLD_"] = str(128 * 1024)  # glibc's default
        if variant == "lib":  # oneDNN / fbgemm linear layers, our step ops
            from samplemind_gen.engines import musicgen_quant

            musicgen_quant.library_half_kernels = True
        engine = load_engine(resolve_model(str(checkpoint)), options)
        if variant == "hf":
            engine.decode_with = "transformers"
        if variant == "unfused":
            engine.cached_decoder.native_attention = False
        if variant == "perop":
            engine.cached_decoder.one_call = False
        run = engine_runner(engine)
    loaded = {"load_s": time.perf_counter() - t0, "rss_after_load_mb": current_rss_mb()}
    loaded["peak_rss_load_mb"] = peak_rss_mb()
    loaded["hwm_reset"] = reset_peak_rss()
    print(json.dumps({"ready": mode, **loaded}), flush=True)
    for line in sys.stdin:
        words = line.split()
        duration, takes = float(words[0]), int(words[1])
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        result = run(duration, takes)
        if cuda:
            torch.cuda.synchronize()
            result["peak_vram_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result.update(loaded, peak_rss_mb=vm_hwm_mb(), mode=mode, duration=duration, takes=takes)
        print(json.dumps(result), flush=True)


def baseline_runner(model, processor):  # type: ignore[no-untyped-def]
    import torch

    frame_rate = model.config.audio_encoder.sampling_rate / 640
    codebooks = model.decoder.num_codebooks

    device = model.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run(duration: float, takes: int = 1) -> dict:
        steps = round(duration * frame_rate) + codebooks - 1
        inputs = processor(text=[PROMPT] * takes, padding=True, return_tensors="pt").to(device)
        sync()
        t0 = time.perf_counter()
        model.text_encoder(**inputs)
        sync()
        t_text = time.perf_counter() - t0
        codes = torch.randint(0, 2048, (1, takes, codebooks, steps - codebooks + 1), device=device)
        t0 = time.perf_counter()
        model.audio_encoder.decode(codes, audio_scales=[None])
        sync()
        t_codec = time.perf_counter() - t0
        torch.manual_seed(0)
        t0 = time.perf_counter()
        model.generate(
            **inputs, do_sample=True, guidance_scale=3.0, top_k=250, max_new_tokens=steps
        )
        sync()
        total = time.perf_counter() - t0
        # generate = T5 + decode steps + EnCodec; T5 and EnCodec timed alone just before.
        decode = max(1e-9, total - t_text - t_codec)
        return {
            "steps": steps,
            "ms_per_step": 1000 * decode / steps,
            "text_encoder_s": t_text,
            "audio_decoder_s": t_codec,
            "total_s": total,
            "first_audio_s": total,  # no streaming: the first sound is the whole take
        }

    return run


def engine_runner(engine):  # type: ignore[no-untyped-def]
    from samplemind_gen.playback import LivePlayback, StreamPlayer
    from samplemind_gen.request import GenerationRequest

    class Output(StreamPlayer):
        """Live play's decisions as the app makes them; the output only notes when it opens."""

        opened_at: float | None = None

        def _open(self) -> None:
            self._stream = object()
            self.opened_at = time.perf_counter()

    def run(duration: float, takes: int = 1) -> dict:
        requests = [
            GenerationRequest(PROMPT, duration=duration, seed=1 + i, guidance_scale=3.0)
            for i in range(takes)
        ]
        chunks = [0]
        live = LivePlayback(lambda: engine.sample_rate)
        live.player = output = Output(engine.sample_rate, engine.channels)

        def on_audio(chunk, start):  # type: ignore[no-untyped-def]
            chunks[0] += 1
            live.on_audio(chunk, start)

        t0 = time.perf_counter()
        take = engine.generate(requests, on_audio=on_audio, on_progress=live.on_progress)[0]
        total = time.perf_counter() - t0
        t = take.timings
        steps = engine.steps_for(duration)
        decode = t["decode"] - t.get("stream_audio_decoder", 0.0)
        return {
            "steps": steps,
            "ms_per_step": 1000 * decode / steps,
            "text_encoder_s": t["text_encoder"],
            "audio_decoder_s": t["audio_decoder"],
            "stream_decoder_s": t.get("stream_audio_decoder", 0.0),
            "total_s": total,
            "first_audio_s": t.get("first_audio", total),
            # when live play (`LivePlayback`) starts: once it can play on without a gap
            "live_play_s": (output.opened_at or t0 + total) - t0,
            "chunks": chunks[0],
        }

    return run


# ------------------------------------------------------------------------------------- parent
def ensure_checkpoint(folder: Path) -> Path:
    from samplemind_gen.testing.tiny_musicgen import (
        SMALL,
        build_musicgen,
        checkpoint_tokenizer,
        save_processor,
    )

    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        # Checkpoints built before the word-level tokenizer read the prompt in 57 tokens
        # instead of 14 (t5-base: about 17); the weights do not depend on it.
        from transformers import AutoTokenizer

        tokenizer = checkpoint_tokenizer(SMALL)
        saved = AutoTokenizer.from_pretrained(folder)
        if saved(PROMPT).input_ids != tokenizer(PROMPT).input_ids:
            save_processor(folder, tokenizer)
        return folder

    print(f"building the musicgen-small architecture (random weights) into {folder} ...")
    t0 = time.perf_counter()
    build_musicgen(folder, size=SMALL)
    print(f"  built in {time.perf_counter() - t0:.0f} s")
    return folder


def machine() -> dict:
    import torch
    import transformers

    name = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "cpu": name,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    ap.add_argument("--duration", type=float, default=2.5, help="seconds of audio per take")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--takes", type=int, default=1, help="takes per call, generated as one batch (default 1)"
    )
    ap.add_argument(
        "--warmup-duration",
        type=float,
        default=0.3,
        help="the untimed first take of each mode (cuda-fp16-compile: use --duration, so the "
        "compile happens there)",
    )
    ap.add_argument("--modes", default="baseline,bf16,int8,int4")
    ap.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds of rest before each take (the previous worker's threads stop spinning)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write all rounds here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.checkpoint)
        return 0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        ap.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    checkpoint = ensure_checkpoint(args.checkpoint)
    info = machine()
    print(json.dumps(info))
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error")
    env["PYTHONPATH"] = (
        str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    )
    workers: dict[str, subprocess.Popen] = {}
    loads: dict[str, dict] = {}
    try:
        for mode in modes:  # one at a time, so loads do not fight for the 2 cores
            cmd = [sys.executable, __file__, "--worker", mode, "--checkpoint", str(checkpoint)]
            p = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
            )
            workers[mode] = p
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line:
                raise SystemExit(f"{mode}: the worker failed to load (its error is above)")
            loads[mode] = json.loads(line)
            print(f"loaded {mode}: {loads[mode]['load_s']:.1f} s", flush=True)
        results: dict[str, list[dict]] = {m: [] for m in modes}

        def ask(mode: str, duration: float, takes: int = 1) -> dict | None:
            """One take from `mode`'s worker; None (and the mode dropped) if the worker died.
            Waits first for the previous worker's OpenMP threads to stop spinning (our modes
            keep them spinning up to ~0.3 s after their last kernel, `keep_cpu_threads_warm`):
            until 2026-12-06 the mode after one of ours started its take on contended cores
            (its text encoder 0.11-0.40 s instead of 0.05-0.16, its first sound +0.3 s)."""
            time.sleep(args.settle)
            p = workers[mode]
            assert p.stdin is not None and p.stdout is not None
            try:
                p.stdin.write(f"{duration} {takes}\n")
                p.stdin.flush()
                return json.loads(p.stdout.readline())
            except (OSError, ValueError):
                print(f"{mode}: the worker failed (its error is above); dropping it", flush=True)
                modes.remove(mode)
                del results[mode]
                return None

        for mode in list(modes):  # warm-up (first-call allocations, oneDNN kernel choice)
            ask(mode, args.warmup_duration)
        for r in range(args.rounds):
            for mode in list(modes):
                res = ask(mode, args.duration, args.takes)
                if res is None:
                    continue
                results[mode].append(res)
                print(
                    f"round {r + 1} {mode:9s} {res['ms_per_step']:7.1f} ms/step  "
                    f"total {res['total_s']:6.1f} s  first sound {res['first_audio_s']:5.2f} s"
                    + (f"  VRAM {res['peak_vram_mb']:.0f} MB" if "peak_vram_mb" in res else ""),
                    flush=True,
                )
    finally:
        for p in workers.values():
            if p.stdin:
                p.stdin.close()
            p.wait(timeout=60)
    report(info, modes, results, args.duration, args.takes)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=1))
    return 0


def report(
    info: dict, modes: list[str], results: dict[str, list[dict]], duration: float, takes: int = 1
) -> None:
    cpu_base, cuda_base = results.get("baseline"), results.get("cuda-baseline")
    print()
    print(
        f"musicgen-small architecture, CFG 3, {duration:g} s takes"
        + (f" ({takes} per call, one batch)" if takes > 1 else "")
        + f", {len(next(iter(results.values())))} "
        f"rounds; {info.get('gpu') or ''} {info['cpu']}, {info['cores']} cores; "
        f"torch {info['torch']}, "
        f"transformers {info['transformers']}; {info['date']}"
    )
    header = (
        "| mode | ms/step | speedup vs baseline | real-time factor | text encoder s | EnCodec s "
        "| first sound s | live play s | peak RSS generating MB | peak RSS loading MB "
        "| peak VRAM MB |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for mode in modes:
        rows = results[mode]
        ms = median([r["ms_per_step"] for r in rows])
        base = cuda_base if mode.startswith("cuda-") else cpu_base
        if base and mode not in ("baseline", "cuda-baseline"):
            ratios = [b["ms_per_step"] / r["ms_per_step"] for b, r in zip(base, rows, strict=False)]
            speed = f"{median(ratios):.2f}x"
        else:
            speed = "1.00x" if mode in ("baseline", "cuda-baseline") else "-"
        rtf = median([r["total_s"] / r["duration"] for r in rows])
        print(
            f"| {mode} | {ms:.1f} | {speed} | {rtf:.2f} | "
            f"{median([r['text_encoder_s'] for r in rows]):.3f} | "
            f"{median([r['audio_decoder_s'] for r in rows]):.3f} | "
            f"{median([r['first_audio_s'] for r in rows]):.2f} | "
            f"{median([r.get('live_play_s', r['first_audio_s']) for r in rows]):.2f} | "
            f"{max(r['peak_rss_mb'] for r in rows):.0f} | "
            f"{max(r['peak_rss_load_mb'] for r in rows):.0f} | "
            f"{vram(rows)} |"
        )
    print(
        "\nreal-time factor = wall time of the whole take / its duration (<= 1 is real time); "
        "first sound = time from the call to the first streamed chunk (baseline: the whole take); "
        "live play = when the app's live playback starts (it waits until it can play on without "
        "a gap); "
        "peak RSS generating = VmHWM reset after loading; loading peak counts the mmapped "
        "checkpoint pages that transformers touches while loading."
    )


def vram(rows: list[dict]) -> str:
    peaks = [r["peak_vram_mb"] for r in rows if "peak_vram_mb" in r]
    return f"{max(peaks):.0f}" if peaks else "-"


if __name__ == "__main__":
    sys.exit(main())
