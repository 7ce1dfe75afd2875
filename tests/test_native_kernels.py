"""samplemind-gen's own CPU kernels (kernels/vnni.cpp: int8 and 4-bit weights through
AVX512-VNNI, bf16 and fp16 weights widened to fp32): built on first use, checked against the dequantized weights, thread-count
independent, and replaced by PyTorch's kernels wherever they cannot be built."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from samplemind_gen.engines import native_kernels
from samplemind_gen.testing.kernel_paths import AmxRows

needs_kernels = pytest.mark.skipif(
    not native_kernels.available(), reason=f"no native kernels here: {native_kernels.reason()}"
)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@needs_kernels
@pytest.mark.parametrize("rows", [1, 2, 5, 9])
@pytest.mark.parametrize("shape", [(1024, 3072), (4096, 1024), (40, 16), (100, 24), (64, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_kernel_matches_its_dequantized_weights(rows, shape, dtype):
    from samplemind_gen.engines.musicgen_quant import Int8Linear

    torch.manual_seed(rows)
    k, n = shape
    linear = nn.Linear(k, n)
    packed = Int8Linear(linear)
    deq = packed.weight[:, :k].float() * packed.scales[:, None]
    x = torch.randn(rows, 1, k).to(dtype)
    y = packed(x)
    assert y.shape == (rows, 1, n) and y.dtype == dtype
    expected = nn.functional.linear(x.float(), deq, linear.bias.detach())
    assert rel_err(y, expected) < 0.02  # int8 activations (one scale per row), bf16 output
    assert rel_err(y, linear(x.float()).detach()) < 0.025


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(4096, 1024), (37, 100), (5, 64), (3, 1)])
def test_int8_pack_op_is_the_pytorch_packing_bit_for_bit(dtype, shape):
    """The one-pass packing op (every int8 load) gives the PyTorch version's levels, padding,
    scales and sums exactly: ties to even, zero rows, clamping."""
    from samplemind_gen.engines.musicgen_quant import int8_pack, int8_pack_reference

    torch.manual_seed(shape[0])
    w = (torch.randn(*shape) * torch.rand(shape[0], 1) * 0.1).to(dtype)
    if shape[1] >= 7:
        w[0, :7] = torch.tensor([127.0, 0.5, 1.5, 2.5, -0.5, -1.5, 63.5]).to(dtype)  # ties
        w[1] = 0  # a zero row: the scale's floor
    got, expected = torch.ops.samplemind.int8_pack(w), int8_pack_reference(w)
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert got[0].shape[1] % 64 == 0
    assert all(torch.equal(a, b) for a, b in zip(int8_pack(w), expected, strict=True))
    with pytest.raises(RuntimeError, match="2-D fp32, fp16 or bf16"):
        torch.ops.samplemind.int8_pack(w.double())


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(4096, 1024), (1024, 4096), (37, 96), (5, 32), (3, 160)])
def test_int4_pack_op_is_the_pytorch_packing_bit_for_bit(dtype, shape):
    """The one-pass 4-bit packing op (every int4 load) gives `int4_levels` + `pack_nibbles`'s
    nibbles, fp16 scales and minimums exactly: ties to even, a constant group, K padding."""
    from samplemind_gen.engines.musicgen_quant import int4_levels, pack_nibbles

    torch.manual_seed(shape[1])
    w = (torch.randn(*shape) * torch.rand(shape[0], 1)).to(dtype)
    w[0, :32] = 0.5  # a constant group: the scale's floor
    got = torch.ops.samplemind.int4_pack(w)
    expected = pack_nibbles(*int4_levels(w))
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        torch.ops.samplemind.int4_pack(w[:, :31])


@needs_kernels
@pytest.mark.parametrize("rows", [1, 2, 5, 9])
@pytest.mark.parametrize("shape", [(1024, 3072), (4096, 1024), (96, 16), (160, 24), (32, 8)])
def test_int4_kernel_matches_its_dequantized_weights(rows, shape):
    from samplemind_gen.engines.musicgen_quant import Int4Linear

    torch.manual_seed(rows)
    k, n = shape
    linear = nn.Linear(k, n)
    native = Int4Linear(linear)
    assert native.native
    # Dequantize the native layout by hand: nibbles -> levels, fp16 scales and minimums.
    low_high = torch.stack([native.nibbles & 15, native.nibbles >> 4], dim=2)
    levels = low_high.reshape(n, -1, 64, 2).transpose(2, 3).reshape(n, -1)[:, :k].float()
    groups = k // 32
    scale = native.scales[:, :groups].float().repeat_interleave(32, dim=1)
    low = native.mins[:, :groups].float().repeat_interleave(32, dim=1)
    deq = levels * scale + low
    x = torch.randn(rows, 1, k).to(torch.bfloat16)
    y = native(x)
    assert y.shape == (rows, 1, n) and y.dtype == torch.bfloat16
    assert rel_err(y, nn.functional.linear(x.float(), deq, linear.bias.detach())) < 0.03
    if n % 16 == 0:  # what aten's kernel takes
        aten = Int4Linear(linear, native=False)
        assert not aten.native
        assert rel_err(y, aten(x)) < 0.03  # the same 4-bit weights on aten's kernel


@needs_kernels
@pytest.mark.parametrize("rows", [1, 2, 5, 9])
@pytest.mark.parametrize("shape", [(1024, 3072), (4096, 1024), (40, 16), (100, 24)])
@pytest.mark.parametrize("weights", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_half_kernel_is_the_float_product_of_its_16_bit_weights(rows, shape, weights, dtype):
    """bf16/fp16 weights, every product and sum in fp32: the float product of the rounded weights
    up to summation order (and the output's rounding to bf16), with or without the GELU."""
    from samplemind_gen.engines.musicgen_quant import HalfLinear

    torch.manual_seed(rows)
    k, n = shape
    linear = nn.Linear(k, n)
    packed = HalfLinear(linear, weights)
    assert packed.weight.dtype == weights and packed.weight.shape[1] % 64 == 0
    x = torch.randn(rows, 1, k).to(dtype)
    expected = nn.functional.linear(
        x.float(), linear.weight.detach().to(weights).float(), linear.bias.detach()
    )
    y = packed(x)
    assert y.shape == (rows, 1, n) and y.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 4e-3  # bf16 output: 8 bits of mantissa
    assert rel_err(y, expected) < tol
    gelu = packed.with_gelu()(x)
    assert rel_err(gelu, nn.functional.gelu(expected)) < tol


@needs_kernels
def test_half_kernel_refuses_what_it_cannot_take():
    w = torch.zeros(8, 64, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="padded to a multiple of 64"):
        torch.ops.samplemind.half_linear(torch.zeros(1, 128), w, None)
    with pytest.raises(RuntimeError, match="bf16 or fp16"):
        torch.ops.samplemind.half_linear(torch.zeros(1, 64), w.float(), None)
    with pytest.raises(RuntimeError, match="gelu"):
        torch.ops.samplemind.half_linear(torch.zeros(1, 64), w, None, "relu")


@needs_kernels
def test_kernels_give_the_same_result_on_any_number_of_threads():
    from samplemind_gen.engines.musicgen_quant import HalfLinear, Int4Linear, Int8Linear

    torch.manual_seed(0)
    linear, tiled = nn.Linear(1024, 1000), nn.Linear(1024, 1024)  # AMX takes blocks of 16
    x, x8 = torch.randn(2, 1, 1024), torch.randn(8, 1, 1024)
    kernels = (Int8Linear(linear), Int4Linear(linear), HalfLinear(linear))
    calls = [lambda k=k: k(x) for k in kernels]
    calls += [lambda: Int8Linear(tiled)(x8), lambda: HalfLinear(tiled)(x8.to(torch.bfloat16))]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = [call() for call in calls]
        torch.set_num_threads(2)
        two = [call() for call in calls]
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)


def _amx(kind: str) -> bool:
    return native_kernels.available() and kind in torch.ops.samplemind.amx_kinds().split(",")


@needs_kernels
@pytest.mark.parametrize("rows", [1, 2, 4, 5, 9, 16, 17])
@pytest.mark.parametrize("shape", [(1024, 3072), (4096, 1024), (80, 48), (100, 32)])
def test_amx_int8_products_are_the_vector_kernels_bit_for_bit(rows, shape):
    """int8 on AMX tiles (`tdpbsud`) sums the same integers as `vpdpbusd`: the same outputs,
    fp32 or bf16 activations, with or without the GELU, any row count (groups of 16 rows)."""
    from samplemind_gen.engines.musicgen_quant import Int8Linear

    if not _amx("int8"):
        pytest.skip("no AMX-INT8 here")
    torch.manual_seed(rows)
    k, n = shape
    kernel = Int8Linear(nn.Linear(k, n))
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(rows, 1, k).to(dtype)
        with AmxRows(1):
            tiles = kernel(x), kernel.with_gelu()(x)
        with AmxRows(1 << 30):
            vector = kernel(x), kernel.with_gelu()(x)
        assert torch.equal(tiles[0], vector[0]) and torch.equal(tiles[1], vector[1])


@needs_kernels
@pytest.mark.parametrize("rows", [1, 2, 4, 9, 16, 17])
@pytest.mark.parametrize("shape", [(1024, 3072), (4096, 1024), (80, 48)])
def test_amx_bf16_products_match_and_do_not_depend_on_the_batch(rows, shape):
    """bf16 x bf16 on AMX tiles: the float product of the bf16 values (within the output's bf16
    rounding of the vector kernel), and each row exactly what it is alone: a take's numbers do
    not change with the number of takes in its batch."""
    from samplemind_gen.engines.musicgen_quant import HalfLinear

    if not _amx("bf16"):
        pytest.skip("no AMX-BF16 here")
    torch.manual_seed(rows)
    k, n = shape
    linear = nn.Linear(k, n)
    kernel = HalfLinear(linear, torch.bfloat16)
    x = torch.randn(rows, 1, k).to(torch.bfloat16)
    expected = nn.functional.linear(
        x.float(), linear.weight.detach().to(torch.bfloat16).float(), linear.bias.detach()
    )
    with AmxRows(1):
        tiles = kernel(x)
        alone = torch.cat([kernel(x[i : i + 1]) for i in range(rows)])
        gelu = kernel.with_gelu()(x)
    with AmxRows(1 << 30):
        vector = kernel(x)
    assert tiles.dtype == torch.bfloat16 and tiles.shape == (rows, 1, n)
    assert rel_err(tiles, expected) < 4e-3 and rel_err(tiles, vector) < 4e-3
    assert rel_err(gelu, nn.functional.gelu(expected)) < 4e-3
    assert torch.equal(tiles, alone)


@needs_kernels
def test_amx_can_be_switched_off():
    code = "import torch; from samplemind_gen.engines import native_kernels; "
    code += "native_kernels.available(); print(repr(torch.ops.samplemind.amx_kinds()))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "SAMPLEMIND_GEN_AMX": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "''"


@needs_kernels
def test_the_l1_prefetch_switch_changes_no_number():
    """SAMPLEMIND_GEN_L1_PREFETCH (off by default on AMD, on elsewhere) only moves loads: the
    int8 and compact bf16 products come out bit for bit the same either way."""
    from samplemind_gen.testing.kernel_paths import run_with_env

    code = """
import hashlib, json, torch
from torch import nn
from samplemind_gen.engines.musicgen_quant import CompactLinear, Int8Linear
torch.manual_seed(0)
lin = nn.Linear(1024, 512)
lin.weight.data *= 3
out = [Int8Linear(lin)(torch.randn(2, 1024))]
if CompactLinear.available():
    out.append(CompactLinear(lin)(torch.randn(2, 1024).to(torch.bfloat16)).float())
print(json.dumps({"sha256": hashlib.sha256(b"".join(t.numpy().tobytes() for t in out)).hexdigest()}))
"""
    on, off = (run_with_env(code, {"SAMPLEMIND_GEN_L1_PREFETCH": v}) for v in ("1", "0"))
    assert on == off


@needs_kernels
def test_int8_musicgen_runs_on_the_native_kernel(tiny_musicgen: Path):
    from samplemind_gen.catalog import resolve_model
    from samplemind_gen.engines import LoadOptions, load_engine
    from samplemind_gen.engines.musicgen_quant import is_native_int8
    from samplemind_gen.request import GenerationRequest

    engine = load_engine(resolve_model(str(tiny_musicgen)), LoadOptions(quantize="int8"))
    assert is_native_int8(engine.model.decoder)
    req = [GenerationRequest("lofi drums", duration=0.3, seed=2)]
    a, b = engine.generate(req)[0].audio, engine.generate(req)[0].audio
    assert a.shape == (1, 9600) and (a == b).all()


def _probe(env: dict[str, str], tiny: Path | None = None) -> dict:
    """In a fresh process: are the kernels used, why not, and what int8 MusicGen runs on (and
    fp16 MusicGen: "fp16_ours", "fp16_fbgemm")."""
    code = """
import json, sys
from samplemind_gen.engines import native_kernels
out = {"available": native_kernels.available(), "reason": native_kernels.reason()}
if len(sys.argv) > 1:
    from samplemind_gen.catalog import resolve_model
    from samplemind_gen.engines import LoadOptions, load_engine
    from samplemind_gen.engines.musicgen_quant import is_half_packed, is_native_int8, is_quantized
    from samplemind_gen.request import GenerationRequest
    engine = load_engine(resolve_model(sys.argv[1]), LoadOptions(quantize="int8"))
    out["native"] = is_native_int8(engine.model.decoder)
    out["quantized"] = is_quantized(engine.model.decoder)
    out["samples"] = engine.generate([GenerationRequest("pad", duration=0.3, seed=1)])[0].audio.shape[-1]
    fp16 = load_engine(resolve_model(sys.argv[1]), LoadOptions(dtype="float16"))
    out["fp16_ours"] = is_half_packed(fp16.model.decoder)
    out["fp16_fbgemm"] = is_quantized(fp16.model.decoder)
    fp16.generate([GenerationRequest("pad", duration=0.1, seed=1)])
print(json.dumps(out))
"""
    args = [sys.executable, "-c", code] + ([str(tiny)] if tiny else [])
    done = subprocess.run(
        args, env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_switched_off_int8_and_fp16_fall_back_to_fbgemm(tiny_musicgen: Path):
    out = _probe({"SAMPLEMIND_GEN_NATIVE_KERNELS": "0"}, tiny_musicgen)
    assert out["available"] is False and "switched off" in out["reason"]
    assert out["quantized"] and not out["native"] and out["samples"] == 9600
    assert out["fp16_fbgemm"] and not out["fp16_ours"]


def test_a_failing_build_falls_back_and_leaves_no_library(tmp_path: Path):
    cache = tmp_path / "kernels"
    fake = tmp_path / "g++"
    fake.write_text("#!/bin/sh\necho 'fake compiler: broken' >&2\nexit 1\n")
    fake.chmod(0o755)
    out = _probe({"CXX": str(fake), "SAMPLEMIND_GEN_KERNEL_CACHE": str(cache)})
    assert out["available"] is False
    from samplemind_gen.devices import cpu_flags

    if all(f in cpu_flags() for f in native_kernels.REQUIRED_FLAGS):
        assert "building them failed" in out["reason"]
        assert cache.is_dir() and not any(cache.iterdir())  # no half-written library


@needs_kernels
def test_the_library_is_built_once_per_machine_into_the_cache(tmp_path: Path):
    cache = tmp_path / "kernels"
    out = _probe({"SAMPLEMIND_GEN_KERNEL_CACHE": str(cache)})
    assert out["available"] is True and out["reason"] == ""
    built = list(cache.iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"
    stamp = built[0].stat().st_mtime_ns
    assert _probe({"SAMPLEMIND_GEN_KERNEL_CACHE": str(cache)})["available"] is True
    assert [p.stat().st_mtime_ns for p in cache.iterdir()] == [stamp]  # reused, not rebuilt


ISA_CHECK = """
import json, torch
from torch import nn
from samplemind_gen.engines import native_kernels
from samplemind_gen.engines.musicgen_quant import HalfLinear, Int4Linear, Int8Linear
torch.manual_seed(0)
errors = {}
for k, n in ((1024, 512), (96, 40), (4096, 64)):
    linear = nn.Linear(k, n)
    x = torch.randn(9, 1, k)  # 8 + 1 rows: the 16-bit kernels take up to 8 at a time
    ref = linear(x).detach()
    kernels = (("int8", Int8Linear(linear)), ("int4", Int4Linear(linear, native=True)),
               ("bf16", HalfLinear(linear, torch.bfloat16)), ("fp16", HalfLinear(linear, torch.float16)))
    for name, kernel in kernels:
        y = kernel(x.to(torch.bfloat16) if name == "int4" else x).float()
        err = float((y - ref).norm() / ref.norm())
        errors[name] = max(errors.get(name, 0.0), err)
from samplemind_gen.engines.encodec_fast import HalfLstm
lstm = nn.LSTM(96, 96, 2)
x = torch.randn(7, 3, 96)
with torch.no_grad():
    ref = lstm(x)[0]
    errors["lstm"] = float((HalfLstm(lstm)(x)[0] - ref).norm() / ref.norm())
print(json.dumps({"isa": native_kernels.isa(), **errors}))
"""


@needs_kernels
@pytest.mark.parametrize("isa", ["avx512", "avxvnni", "avx2"])
def test_every_instruction_set_path_computes_the_same_products(isa: str):
    """The AVX512-VNNI, AVX-VNNI and AVX2 paths (SAMPLEMIND_GEN_KERNEL_ISA picks a lower one than
    the CPU has) all match the float product within their quantization error."""
    from samplemind_gen.testing.kernel_paths import ISA_NAME, has_path, run_on_path

    if not has_path(isa):
        pytest.skip(f"this CPU has no {isa}")
    out = run_on_path(ISA_CHECK, isa)
    assert out["isa"] == ISA_NAME[isa]
    # int8: per-channel weights, 8-bit activations (7-bit on AVX2); int4: 16 levels per group.
    assert out["int8"] < (0.03 if isa == "avx2" else 0.02)
    assert 0.02 < out["int4"] < 0.15
    # bf16 / fp16 weights with fp32 math: only the weights' rounding (8 / 11 bits of mantissa).
    assert out["bf16"] < 5e-3 and out["fp16"] < 1e-3
    assert out["lstm"] < 5e-4  # EnCodec's LSTM with fp16 recurrent weights


INT8_OUTPUTS = """
import sys, torch
from torch import nn
from samplemind_gen.engines import native_kernels
from samplemind_gen.engines.musicgen_quant import Int8Linear
assert native_kernels.available()
torch.manual_seed(0)
outputs = []
for k, n in ((1024, 4096), (4096, 1024), (1024, 1000), (96, 10), (64, 3)):
    kernel = Int8Linear(nn.Linear(k, n))
    for rows in (1, 2, 3, 5):
        x = torch.randn(rows, 1, k)
        outputs += [kernel(x), kernel.with_gelu()(x.to(torch.bfloat16))]
torch.save(outputs, sys.argv[1])
print('{"isa": "%s"}' % native_kernels.isa())
"""


@needs_kernels
def test_int8_products_are_the_same_on_avx512_and_avx_vnni(tmp_path: Path):
    """Both VNNI paths quantize the activations alike (uint8 around 128) and sum the same
    integers, four outputs at a time or one: their outputs are equal bit for bit, for 1-5 rows
    and output counts that are not multiples of four."""
    from samplemind_gen.testing.kernel_paths import has_path, run_on_path

    if not (has_path("avx512") and has_path("avxvnni")):
        pytest.skip("needs a CPU with both AVX512-VNNI and AVX-VNNI")
    results = {}
    for isa in ("avx512", "avxvnni"):
        path = tmp_path / f"{isa}.pt"
        run_on_path(INT8_OUTPUTS.replace("sys.argv[1]", repr(str(path))), isa)
        results[isa] = torch.load(path)
    assert len(results["avx512"]) == 40
    for a, b in zip(results["avx512"], results["avxvnni"], strict=True):
        assert torch.equal(a, b)


def test_front_ends_keep_openmp_threads_spinning_unless_the_user_chose():
    """The CLI (and the TUI it starts) sets libgomp's spin count before torch is imported, so the
    workers do not fall asleep between a decode step's ~170 parallel kernels; a user's own
    GOMP_SPINCOUNT or OMP_WAIT_POLICY wins."""
    code = (
        "import os, sys\n"
        "from samplemind_gen.cli.main import main\n"
        "main(['models', 'list'])\n"
        "print('SPIN', os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)\n"
    )
    from samplemind_gen.devices import OMP_SPIN_COUNT

    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    for extra, expected in (
        ({}, OMP_SPIN_COUNT),
        ({"GOMP_SPINCOUNT": "1000"}, "1000"),
        ({"OMP_WAIT_POLICY": "PASSIVE"}, "None"),
    ):
        done = subprocess.run(
            [sys.executable, "-c", code], env={**base, **extra}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        line = [ln for ln in done.stdout.splitlines() if ln.startswith("SPIN")][-1]
        assert line.split()[1] == expected
