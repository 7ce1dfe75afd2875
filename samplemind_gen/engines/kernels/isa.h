// The instruction-set paths samplemind-gen's CPU kernels (vnni.cpp, attention.cpp) choose from at
// run time. The library is built for plain x86-64; each path's functions carry their own `target`
// attribute (or sit under `#pragma GCC target`), so no instruction of a newer set runs on a CPU
// without it.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>

namespace samplemind_kernels {

enum class Isa { kAvx2, kAvxVnni, kAvx512 };

// The best path this CPU runs, once; SAMPLEMIND_GEN_KERNEL_ISA=avx2|avxvnni|avx512 picks a lower
// one (tests run every path on one machine).
inline Isa kernel_isa_choice() {
  static const Isa chosen = [] {
    __builtin_cpu_init();
    Isa best = Isa::kAvx2;
    if (__builtin_cpu_supports("avxvnni")) best = Isa::kAvxVnni;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni")) {
      best = Isa::kAvx512;
    }
    const char* forced = std::getenv("SAMPLEMIND_GEN_KERNEL_ISA");
    if (forced != nullptr) {
      const std::string want(forced);
      const Isa asked = want == "avx2" ? Isa::kAvx2 : want == "avxvnni" ? Isa::kAvxVnni
                                                                           : Isa::kAvx512;
      if (static_cast<int>(asked) < static_cast<int>(best)) best = asked;
    }
    return best;
  }();
  return chosen;
}

// erf-GELU in place over n floats (step_ops.cpp), for the linear kernels' outputs.
void gelu_inplace(float* y, int64_t n);

// The kinds of linear kernel `packed_linear` (vnni.cpp) runs, as the Python side numbers them
// (musicgen_decoder.LINEAR_KINDS).
enum LinearKind : int64_t {
  kLinearHalf = 0,
  kLinearInt8 = 1,
  kLinearInt4 = 2,
  kLinearCompact = 3
};

}  // namespace samplemind_kernels
