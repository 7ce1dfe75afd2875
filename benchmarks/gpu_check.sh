#!/usr/bin/env bash
# The GPU checks of MusicGen's CUDA path in one go, for a lent GPU machine (docs/performance.md):
# the CUDA tests, then bench_musicgen.py's CUDA modes on 30 s takes. Logs and JSON go to $OUT
# (or ./gpu-results). Needs torch with CUDA, tokenizers, safetensors, numpy, pytest, and
# transformers 5.24.0: put its wheel in .whl/ if the machine has another version.
#   SECONDS_TESTS=150 SECONDS_BENCH=300 SECONDS_COMPILE=120 bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 SAMPLEMIND_GEN_HOME=/tmp/smg \
    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/machine.txt"
python3 benchmarks/bench_musicgen.py --help >/dev/null || exit 1
# The checkpoint is built while the tests run (both use the CPU only for that).
python3 -c "from pathlib import Path
from samplemind_gen.testing.tiny_musicgen import SMALL, build_musicgen
build_musicgen(Path('/tmp/musicgen-small-arch'), size=SMALL)" \
    >"$OUT/checkpoint.log" 2>&1 &
timeout "${SECONDS_TESTS:-150}" python3 -m pytest -q -p no:cacheprovider -x \
    tests/test_musicgen_fast.py -k "cuda or whole_step or draw" 2>&1 | tee "$OUT/tests.log"
wait
timeout "${SECONDS_BENCH:-300}" python3 benchmarks/bench_musicgen.py --duration 30 --rounds 2 \
    --modes "${MODES:-cuda-baseline,cuda-fp16,cuda-bf16,cuda-fp16-stepgraph}" \
    --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
if [ "${SECONDS_COMPILE:-0}" -gt 0 ]; then
    timeout "$SECONDS_COMPILE" python3 benchmarks/bench_musicgen.py --duration 30 --rounds 1 --warmup-duration 30 \
        --modes cuda-fp16,cuda-fp16-compile --json "$OUT/bench-compile.json" 2>&1 \
        | tee "$OUT/bench-compile.log"
fi
