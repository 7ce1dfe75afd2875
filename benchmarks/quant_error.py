"""How far each CPU mode's decoder output is from fp32, on the real musicgen-small architecture
(random weights: the error of the arithmetic, not of the music).

    .venv/bin/python benchmarks/quant_error.py [--steps 24] [--modes bf16,int8,int8-fbgemm,...]

Every mode steps its decoder over the same prompt and the same random frames; the number is the
relative RMS error of the logits against fp32, averaged over the steps, and how often the top
token (greedy choice) agrees with fp32's. "-fbgemm"/"-aten": PyTorch's kernels instead of
samplemind-gen's own (native_kernels).
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "warm dusty lofi hip hop drums with a deep bass and vinyl crackle"


def logits(mode: str, checkpoint: Path, steps: int) -> list:
    import torch
    from bench_musicgen import cpu_options

    from samplemind_gen.catalog import resolve_model
    from samplemind_gen.engines import load_engine

    base, _, variant = mode.partition("-")
    if variant:
        os.environ["SAMPLEMIND_GEN_NATIVE_KERNELS"] = "0"
    engine = load_engine(resolve_model(str(checkpoint)), cpu_options(base))
    inputs = engine.processor(text=[PROMPT], return_tensors="pt")
    states, mask = engine._encode(inputs["input_ids"], inputs["attention_mask"], 3.0)
    decoder = engine.cached_decoder
    decoder.begin(states, mask, steps)
    rows = 2 * engine.num_codebooks
    gen = torch.Generator().manual_seed(0)
    out = [
        decoder.step(torch.randint(0, 2048, (rows, 1), generator=gen), t).float()
        for t in range(steps)
    ]
    decoder.end()
    del engine
    gc.collect()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=Path("/tmp/musicgen-small-arch"))
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--modes", default="bf16,fp16,int8,int8-fbgemm,int4,int4-aten")
    ap.add_argument("--save", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    if args.mode:  # worker: one mode per process (fallback switches are per process)
        torch.save(logits(args.mode, args.checkpoint, args.steps), args.save)
        return 0
    from bench_musicgen import ensure_checkpoint

    ensure_checkpoint(args.checkpoint)
    results = {}
    for mode in ["fp32", *args.modes.split(",")]:
        path = Path(f"/tmp/quant-error-{mode}.pt")
        cmd = [sys.executable, __file__, "--mode", mode, "--save", str(path)]
        cmd += ["--checkpoint", str(args.checkpoint), "--steps", str(args.steps)]
        subprocess.run(cmd, check=True)
        results[mode] = torch.load(path)
        path.unlink()
    ref = results.pop("fp32")
    print(f"| mode | logit error vs fp32 | top token agrees with fp32 | ({args.steps} steps) |")
    print("|---|---|---|---|")
    for mode, got in results.items():
        pairs = list(zip(got, ref, strict=True))
        err = [float((g - r).norm() / r.norm()) for g, r in pairs]
        agree = [float((g.argmax(-1) == r.argmax(-1)).float().mean()) for g, r in pairs]
        print(f"| {mode} | {sum(err) / len(err):.2%} | {sum(agree) / len(agree):.1%} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
