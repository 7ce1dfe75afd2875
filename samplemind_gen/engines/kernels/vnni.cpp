// int8 and 4-bit weight x 8-bit activation matrix-vector products for MusicGen's decode step on
// x86 CPUs (built and loaded by samplemind_gen/engines/native_kernels.py). Three code paths,
// chosen once at run time (`kernel_isa()`): AVX512-VNNI (Xeon since Ice Lake, Zen 4), AVX-VNNI
// (256-bit, Intel Core since Alder Lake) and AVX2 (vpmaddubsw; older x86-64). The file is built
// for plain x86-64: each path's functions carry their own `target` attribute, so no instruction
// of a newer set runs on a CPU without it.
//
// Decoding multiplies a few activation rows (the prompt and classifier-free guidance's empty
// prompt: 2 rows a take) by every weight matrix of the decoder, so the product is bound by how
// fast the weights stream from memory. aten's _weight_int4pack_mm_for_cpu widens every weight to
// float and runs out of arithmetic first (~11 GB/s of packed weights on a 2-core Xeon). Here the
// activations are quantized to int8 (one scale per row, as fbgemm's dynamic int8 does) and
// `vpdpbusd` multiplies 64 unsigned 4-bit weights by 64 int8 activations in one instruction.
//
// Weight layout, per output row n (Int4Linear in musicgen_quant.py packs it), K padded with zero
// weights to Kp, a multiple of 128:
//   nibbles (N, Kp/2) uint8: for each block of 128 inputs k0..k0+127, byte j (0..63) holds
//            q[k0 + j] in its low nibble and q[k0 + 64 + j] in its high nibble;
//   scales, mins (N, Kp/32) fp16: w[n, k] = q[n, k] * scale[n, g] + min[n, g], g = k / 32.
// Then y[m, n] = sx[m] * sum_g scale[n,g] * sum_{k in g} q[n,k] * xq[m,k]
//              + sum_g min[n,g] * xsum[m,g]   (+ bias[n]),
// with x[m, k] ~= sx[m] * xq[m, k] and xsum the exact float sum of x over each group.
// Each output is computed by one thread from start to end, so the result does not depend on the
// number of threads.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include "isa.h"

#include <immintrin.h>
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace {

#define SMG_AVX2 __attribute__((target("avx2,fma,f16c")))
#define SMG_AVXVNNI __attribute__((target("avx2,fma,f16c,avxvnni")))
#define SMG_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
// AVX512-BF16 intrinsics and their __builtin_cpu_supports name: GCC 11+, clang 12+ (older
// compilers build everything else; bf16 x bf16 then widens like the other 16-bit paths).
#if (defined(__clang__) && __clang_major__ >= 12) || \
    (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11)
#define SMG_HAVE_BF16_PAIRS 1
#define SMG_AVX512BF16 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512bf16,avx2,fma,f16c")))
#else
#define SMG_HAVE_BF16_PAIRS 0
#endif

using samplemind_kernels::Isa;
using samplemind_kernels::kernel_isa_choice;

std::string kernel_isa() {
  switch (kernel_isa_choice()) {
    case Isa::kAvx512: return "avx512vnni";
    case Isa::kAvxVnni: return "avxvnni";
    default: return "avx2";
  }
}


inline float load1(const void* p, int64_t i, bool bf16) {
  if (!bf16) return static_cast<const float*>(p)[i];
  return static_cast<float>(static_cast<const c10::BFloat16*>(p)[i]);
}

// 8 activations as floats, from fp32 or bf16 storage.
SMG_AVX2 inline __m256 load8(const void* p, int64_t i, bool bf16) {
  if (!bf16) return _mm256_loadu_ps(static_cast<const float*>(p) + i);
  const __m128i h = _mm_loadu_si128(
      reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

SMG_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

SMG_AVX2 inline int32_t hsum8i(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

SMG_AVX2 inline float hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 32 floats (times `inv`, plus `offset`) -> 32 bytes in order, saturated: int8 or uint8.
template <bool kUnsigned>
SMG_AVX2 inline __m256i quantize32(const void* x, int64_t i, bool bf16, __m256 inv,
                                   __m256i offset) {
  __m256i v[4];
  for (int j = 0; j < 4; ++j) {
    v[j] = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(load8(x, i + 8 * j, bf16), inv)),
                            offset);
  }
  const __m256i ab = _mm256_packs_epi32(v[0], v[1]);
  const __m256i cd = _mm256_packs_epi32(v[2], v[3]);
  const __m256i bytes = kUnsigned ? _mm256_packus_epi16(ab, cd) : _mm256_packs_epi16(ab, cd);
  return _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// max |x| over one row of K activations.
SMG_AVX2 inline float row_amax(const void* x, int64_t row, int64_t K, bool bf16) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 vmax = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, load8(x, row + k, bf16)));
  float amax = hmax8(vmax);
  for (; k < K; ++k) amax = std::max(amax, std::abs(load1(x, row + k, bf16)));
  return amax;
}


// fp32 and bf16 activations are read as they are; anything else is converted to fp32 first.
at::Tensor activations(const at::Tensor& x) {
  const bool direct = x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16;
  return (direct ? x : x.to(at::kFloat)).contiguous();
}

// 8 floats -> 8 bf16, rounded to nearest even (as c10::BFloat16 rounds finite values).
SMG_AVX2 inline void store8_bf16(uint16_t* p, __m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF)));
  const __m256i high = _mm256_srli_epi32(rounded, 16);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                   _mm_packus_epi32(_mm256_castsi256_si128(high), _mm256_extracti128_si256(high, 1)));
}

SMG_AVX2 void to_bf16(const float* y, uint16_t* o, int64_t begin, int64_t end) {
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) store8_bf16(o + i, _mm256_loadu_ps(y + i));
  for (; i < end; ++i) o[i] = c10::BFloat16(y[i]).x;
}

// The bias as a contiguous fp32 tensor (undefined when there is none).
at::Tensor float_bias(const std::optional<at::Tensor>& bias) {
  if (bias.has_value() && bias->defined()) return bias->to(at::kFloat).contiguous();
  return at::Tensor();
}

// A per-thread scratch buffer of at least `count` elements, kept between calls (slot: which one).
// Batched takes need ~128 KB buffers a call, and with a 64 KB mmap threshold (glibc; the app's
// until 2026-12-06) a fresh one was mapped and faulted in on every call.
template <typename T, int kSlot>
T* scratch(int64_t count) {
  thread_local std::vector<T> buffer;
  if (static_cast<int64_t>(buffer.size()) < count) buffer.resize(count);
  return buffer.data();
}

// A linear layer's output tensor (x's shape with N outputs, in the activations' dtype) and where
// its fp32 sums go: straight into it when it is fp32, else the calling thread's scratch buffer
// (the workers write into it too), which `finish_range` rounds into it.
struct Outputs {
  at::Tensor out;
  float* y;
  bool direct;
};
Outputs outputs_for(const at::Tensor& x, const at::Tensor& xc, int64_t M, int64_t N) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = N;
  at::Tensor out = at::empty(shape, xc.options());
  const bool direct = out.scalar_type() == at::kFloat;
  return {out, direct ? out.data_ptr<float>() : scratch<float, 0>(M * N), direct};
}

// Outputs n0 .. n1 of every row, by the thread that computed them (no serial pass after the
// parallel one: 1.02x a whole int8 step): GELU when `gelu`, then rounded to bf16 when the
// output is not fp32.
void finish_range(const Outputs& o, int64_t M, int64_t N, int64_t n0, int64_t n1, bool gelu) {
  for (int64_t m = 0; m < M; ++m) {
    float* row = o.y + m * N;
    if (gelu) samplemind_kernels::gelu_inplace(row + n0, n1 - n0);
    if (!o.direct) {
      to_bf16(row, reinterpret_cast<uint16_t*>(o.out.data_ptr<c10::BFloat16>()) + m * N, n0, n1);
    }
  }
}

// The driver the kernels share, four outputs at a time: `block4(n, m0, mb, out)` fills
// out[o * mb + i] for outputs n .. n + 3 and rows m0 .. m0 + mb (at most kRows: 4, or 8 for the
// 16-bit kernels); outputs past the last multiple of four go through `block(n, m0, mb, out)`, one
// output (out[i]). This runs every block in parallel (each output by one thread, start to end),
// adds the bias (then GELU when `gelu`) and returns x's shape with N outputs, in x's dtype.
template <int kRows = 4, typename Block4, typename Block>
at::Tensor for_each_output4(const at::Tensor& x, const at::Tensor& xc, int64_t M, int64_t N,
                            const std::optional<at::Tensor>& bias, bool gelu, Block4 block4,
                            Block block) {
  const Outputs o = outputs_for(x, xc, M, N);
  float* y = o.y;
  const at::Tensor bias_f = float_bias(bias);
  const float* bias_ptr = bias_f.defined() ? bias_f.data_ptr<float>() : nullptr;
  const int64_t blocks = N / 4;
  at::parallel_for(0, blocks + (N % 4 != 0), 4, [&](int64_t b0, int64_t b1) {
    float part[4 * kRows];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n = 4 * b;
      const int64_t count = b < blocks ? 4 : N % 4;
      for (int64_t m0 = 0; m0 < M; m0 += kRows) {
        const int64_t mb = std::min<int64_t>(kRows, M - m0);
        if (count == 4) {
          block4(n, m0, mb, part);
        } else {
          for (int64_t o = 0; o < count; ++o) {
            float one[kRows];
            block(n + o, m0, mb, one);
            for (int64_t i = 0; i < mb; ++i) part[o * mb + i] = one[i];
          }
        }
        for (int64_t o = 0; o < count; ++o) {
          const float add = bias_ptr ? bias_ptr[n + o] : 0.0f;
          for (int64_t i = 0; i < mb; ++i) y[(m0 + i) * N + n + o] = part[o * mb + i] + add;
        }
      }
    }
    finish_range(o, M, N, 4 * b0, std::min(4 * b1, N), gelu);
  });
  return o.out;
}

// `for_each_output4` for kernels that compute one output at a time.
template <int kRows = 4, typename Block>
at::Tensor for_each_output(const at::Tensor& x, const at::Tensor& xc, int64_t M, int64_t N,
                           const std::optional<at::Tensor>& bias, bool gelu, Block block) {
  const auto four = [&](int64_t n, int64_t m0, int64_t mb, float* out) {
    for (int64_t o = 0; o < 4; ++o) {
      float one[kRows];
      block(n + o, m0, mb, one);
      for (int64_t i = 0; i < mb; ++i) out[o * mb + i] = one[i];
    }
  };
  return for_each_output4<kRows>(x, xc, M, N, bias, gelu, four, block);
}

// The activation applied to a linear kernel's outputs: "none" or "gelu" (erf, as F.gelu).
bool gelu_or_none(c10::string_view activation) {
  TORCH_CHECK(activation == "none" || activation == "gelu",
              "activation must be \"none\" or \"gelu\"");
  return activation == "gelu";
}

constexpr int64_t kGroup = 32;
constexpr int64_t kBlock = 128;  // inputs per step: 64 bytes of nibbles
constexpr int64_t kPrefetch = 4096;  // bytes ahead in a weight row: hides the stream's start
// Rows ahead that the kernels reading four rows at a time (int8, compact bf16) also prefetch
// into L2, on top of each row's line of the next block into L1: with the core busy on its
// arithmetic, the hardware's prefetch alone did not keep the memory busy. 24 layers' linears at
// 2 rows, cold, against none: int8 16 / 24 / 32 / 48 rows 1.07 / 1.08 / 1.10 / 1.09x faster
// (AVX-VNNI and AVX2 paths, forced: 1.13-1.16x); compact bf16 17.4-18.1 / 17.6 / 17.4 / 18.9
// against 20.4 ms. int4, one output at a time and bound by its arithmetic, gained nothing.
constexpr int64_t kL2AheadRows = 32;

// Whether those kernels also prefetch each row's line of the next block of outputs into L1.
// Intel (Emerald Rapids) wants it: int8 without it 0.91x. AMD (Zen 4 EPYC) runs faster
// without: 24 layers' linears at 2 rows, cold, in-process A/B (30 rounds each, both orders),
// int8 1.023-1.037x, compact bf16 1.046-1.062x; whole 8 s takes, same rounds, bf16 steps 7-13%
// and int8 6-19% faster. The 256-bit int8 path, forced there, showed no difference and keeps
// it. SAMPLEMIND_GEN_L1_PREFETCH=0/1 forces it either way.
bool l1_prefetch() {
  static const bool on = [] {
    const char* env = std::getenv("SAMPLEMIND_GEN_L1_PREFETCH");
    if (env != nullptr && *env != '\0') return std::string(env) != "0" && std::string(env) != "off";
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return true;
    const bool amd = b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u;  // AuthenticAMD
    return !amd;
  }();
  return on;
}

// M rows of activations (K of them each, K a multiple of 32) -> int8 rows of Kp (zero padded),
// one scale per row, and the exact float sum of each group of 32 inputs (zero for the padding).
SMG_AVX2 void quantize_rows(const void* x, bool bf16, int64_t M, int64_t K, int64_t Kp,
                            int8_t* xq, float* sx, float* xsum) {
  const int64_t groups = K / kGroup;
  const int64_t padded_groups = Kp / kGroup;
  for (int64_t m = 0; m < M; ++m) {
    const int64_t row = m * K;
    const float amax = row_amax(x, row, K, bf16);
    sx[m] = amax / 127.0f;
    const __m256 inv = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    int8_t* q = xq + m * Kp;
    float* sums = xsum + m * padded_groups;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t k = g * kGroup;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + k),
                          quantize32<false>(x, row + k, bf16, inv, _mm256_setzero_si256()));
      __m256 sum = _mm256_add_ps(load8(x, row + k, bf16), load8(x, row + k + 8, bf16));
      sum = _mm256_add_ps(sum, _mm256_add_ps(load8(x, row + k + 16, bf16),
                                             load8(x, row + k + 24, bf16)));
      sums[g] = hsum8(sum);
    }
    std::fill(q + K, q + Kp, static_cast<int8_t>(0));
    std::fill(sums + groups, sums + padded_groups, 0.0f);
  }
}

// Rows m0 .. m0 + MB of the product for one output n (before the row scales and the bias).
template <int MB>
SMG_AVX512 inline void dot_rows(const uint8_t* nib, const c10::Half* scales, const c10::Half* mins,
                     const int8_t* xq, const float* xsum, int64_t Kp, float* dots,
                     float* zero_terms) {
  const int64_t blocks = Kp / kBlock;
  const int64_t groups = Kp / kGroup;
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512i pick_a = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i pick_b = _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2);
  __m512 acc[MB];
  __m512 acc2[MB];  // two chains per row: the FMAs' latency, not their count, bounds one chain
  for (int m = 0; m < MB; ++m) acc[m] = acc2[m] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    _mm_prefetch(reinterpret_cast<const char*>(nib + b * 64 + kPrefetch), _MM_HINT_T0);
    const __m512i raw = _mm512_loadu_si512(nib + b * 64);
    const __m512i lo = _mm512_and_si512(raw, low4);
    const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low4);
    const __m512 s4 = _mm512_castps128_ps512(
        _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales + 4 * b))));
    const __m512 sa = _mm512_permutexvar_ps(pick_a, s4);
    const __m512 sb = _mm512_permutexvar_ps(pick_b, s4);
    for (int m = 0; m < MB; ++m) {
      const int8_t* x = xq + m * Kp + b * kBlock;
      const __m512i da = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(x));
      const __m512i db =
          _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi, _mm512_loadu_si512(x + 64));
      acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(da), sa, acc[m]);
      acc2[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(db), sb, acc2[m]);
    }
  }
  __m512 mz[MB];
  for (int m = 0; m < MB; ++m) mz[m] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; g += 16) {
    const int64_t left = std::min<int64_t>(16, groups - g);
    const __mmask16 mask = static_cast<__mmask16>((1u << left) - 1u);
    const __m512 mv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, mins + g));
    for (int m = 0; m < MB; ++m) {
      mz[m] = _mm512_fmadd_ps(mv, _mm512_maskz_loadu_ps(mask, xsum + m * groups + g), mz[m]);
    }
  }
  for (int m = 0; m < MB; ++m) {
    dots[m] = _mm512_reduce_add_ps(_mm512_add_ps(acc[m], acc2[m]));
    zero_terms[m] = _mm512_reduce_add_ps(mz[m]);
  }
}

// The 256-bit paths' multiply-add of 32 unsigned bytes by 32 signed bytes into 8 int32 sums
// of 4: `vpdpbusd` (AVX-VNNI), or `vpmaddubsw` + `vpmaddwd` (AVX2; the 16-bit pair sums saturate
// above 32767, which the callers' value ranges never reach).
template <bool kVnni>
SMG_AVXVNNI inline __m256i dot4(__m256i acc, __m256i u8, __m256i s8) {
  if constexpr (kVnni) {
    return _mm256_dpbusd_avx_epi32(acc, u8, s8);
  } else {
    const __m256i pairs = _mm256_maddubs_epi16(u8, s8);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
}

// `dot_rows` on 256-bit registers: each 32-byte half of a 128-input block, low or high nibbles,
// is exactly one group of 32.
template <int MB, bool kVnni>
SMG_AVXVNNI inline void dot_rows_256(const uint8_t* nib, const c10::Half* scales,
                                     const c10::Half* mins, const int8_t* xq, const float* xsum,
                                     int64_t Kp, float* dots, float* zero_terms) {
  const int64_t blocks = Kp / kBlock;
  const int64_t groups = Kp / kGroup;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256 acc[MB];
  for (int m = 0; m < MB; ++m) acc[m] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    _mm_prefetch(reinterpret_cast<const char*>(nib + b * 64 + kPrefetch), _MM_HINT_T0);
    const __m128 s4 =
        _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales + 4 * b)));
    __m256 scale4[4];
    for (int i = 0; i < 4; ++i) {
      scale4[i] = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(s4), _mm256_set1_epi32(i));
    }
    for (int half = 0; half < 2; ++half) {
      const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(nib + b * 64 + 32 * half));
      const __m256i w[2] = {_mm256_and_si256(raw, low4),
                            _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4)};
      for (int nibble = 0; nibble < 2; ++nibble) {
        const int group = 2 * nibble + half;  // inputs 32 * group .. within the block
        const __m256 scale = scale4[group];
        for (int m = 0; m < MB; ++m) {
          const __m256i xv = _mm256_loadu_si256(
              reinterpret_cast<const __m256i*>(xq + m * Kp + b * kBlock + 32 * group));
          const __m256i d = dot4<kVnni>(_mm256_setzero_si256(), w[nibble], xv);
          acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), scale, acc[m]);
        }
      }
    }
  }
  __m256 mz[MB];
  for (int m = 0; m < MB; ++m) mz[m] = _mm256_setzero_ps();
  int64_t g = 0;
  for (; g + 8 <= groups; g += 8) {  // groups is a multiple of 4 (Kp of 128)
    const __m256 mv =
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(mins + g)));
    for (int m = 0; m < MB; ++m) {
      mz[m] = _mm256_fmadd_ps(mv, _mm256_loadu_ps(xsum + m * groups + g), mz[m]);
    }
  }
  for (int m = 0; m < MB; ++m) {
    float z = hsum8(mz[m]);
    for (int64_t t = g; t < groups; ++t) z += static_cast<float>(mins[t]) * xsum[m * groups + t];
    dots[m] = hsum8(acc[m]);
    zero_terms[m] = z;
  }
}

// `f.template operator()<MB>()` for MB = mb (1 to 4): the kernels are unrolled per row count.
template <typename F>
inline void with_rows(int64_t mb, F&& f) {
  switch (mb) {
    case 1: f.template operator()<1>(); break;
    case 2: f.template operator()<2>(); break;
    case 3: f.template operator()<3>(); break;
    default: f.template operator()<4>(); break;
  }
}

// The same for 1 to 8 rows (the 16-bit kernels: batched takes reuse each weight for 8 rows
// instead of streaming it twice from L1 per 4; 4 takes with guidance are 8 rows).
template <typename F>
inline void with_rows8(int64_t mb, F&& f) {
  if (mb <= 4) {
    with_rows(mb, f);
    return;
  }
  switch (mb) {
    case 5: f.template operator()<5>(); break;
    case 6: f.template operator()<6>(); break;
    case 7: f.template operator()<7>(); break;
    default: f.template operator()<8>(); break;
  }
}

// One output's rows through the chosen path.
inline void int4_rows(Isa isa, int64_t mb, const uint8_t* wn, const c10::Half* sn,
                      const c10::Half* mnn, const int8_t* xr, const float* sr, int64_t Kp,
                      float* dots, float* zero_terms) {
  with_rows(mb, [&]<int MB>() {
    if (isa == Isa::kAvx512) dot_rows<MB>(wn, sn, mnn, xr, sr, Kp, dots, zero_terms);
    else if (isa == Isa::kAvxVnni) dot_rows_256<MB, true>(wn, sn, mnn, xr, sr, Kp, dots, zero_terms);
    else dot_rows_256<MB, false>(wn, sn, mnn, xr, sr, Kp, dots, zero_terms);
  });
}

at::Tensor int4_linear(const at::Tensor& x, const at::Tensor& nibbles, const at::Tensor& scales,
                       const at::Tensor& mins, const std::optional<at::Tensor>& bias,
                       c10::string_view activation) {
  const int64_t K = x.size(-1);
  const int64_t N = nibbles.size(0);
  const int64_t Kp = nibbles.size(1) * 2;
  TORCH_CHECK(K % kGroup == 0 && Kp % kBlock == 0 && Kp >= K && Kp < K + kBlock,
              "int4_linear: in_features must be a multiple of 32, packed to a multiple of 128");
  TORCH_CHECK(nibbles.scalar_type() == at::kByte && nibbles.is_contiguous(),
              "int4_linear: nibbles must be contiguous uint8 (N, Kp/2)");
  TORCH_CHECK(scales.scalar_type() == at::kHalf && mins.scalar_type() == at::kHalf &&
                  scales.is_contiguous() && mins.is_contiguous() && scales.size(0) == N &&
                  scales.size(1) == Kp / kGroup && mins.sizes() == scales.sizes(),
              "int4_linear: scales and mins must be contiguous fp16 (N, Kp/32)");
  const int64_t M = x.numel() / K;
  const Isa isa = kernel_isa_choice();
  const at::Tensor xc = activations(x);
  const bool bf16 = xc.scalar_type() == at::kBFloat16;
  std::vector<int8_t> xq(M * Kp);
  std::vector<float> sx(M);
  std::vector<float> xsum(M * (Kp / kGroup));
  quantize_rows(xc.data_ptr(), bf16, M, K, Kp, xq.data(), sx.data(), xsum.data());

  const uint8_t* nib = nibbles.data_ptr<uint8_t>();
  const c10::Half* sc = scales.data_ptr<c10::Half>();
  const c10::Half* mn = mins.data_ptr<c10::Half>();
  const int64_t groups = Kp / kGroup;
  return for_each_output(x, xc, M, N, bias, gelu_or_none(activation),
                         [&](int64_t n, int64_t m0, int64_t mb, float* out) {
    const uint8_t* wn = nib + n * (Kp / 2);
    const c10::Half* sn = sc + n * groups;
    const c10::Half* mnn = mn + n * groups;
    const int8_t* xr = xq.data() + m0 * Kp;
    const float* sr = xsum.data() + m0 * groups;
    float dots[4];
    float zero_terms[4];
    int4_rows(isa, mb, wn, sn, mnn, xr, sr, Kp, dots, zero_terms);
    for (int64_t i = 0; i < mb; ++i) out[i] = sx[m0 + i] * dots[i] + zero_terms[i];
  });
}


// ---------------------------------------------------------------------------------------- int8
// int8 weights (one fp32 scale per output row, symmetric) x uint8 activations (one scale per
// row, zero point 128): y[m, n] = sx[m] * sw[n] * (sum_k xu[m,k] w[n,k] - 128 * wsum[n]) + bias,
// with xu = round(x / sx) + 128 and wsum[n] = sum_k w[n, k]. The same arithmetic as fbgemm's
// dynamic int8 linear (u8 activations, s8 weights, vpdpbusd) with per-row activation scales.
// Weights (N, Kp) int8, K zero-padded to Kp, a multiple of 64.

// Activations -> uint8 around `zero` (128; 64 on the AVX2 path, whose 16-bit pair sums must not
// saturate: |x| maps to at most `levels` (127; 63) steps), one scale per row; Kp zero-padded.
SMG_AVX2 void quantize_rows_u8(const void* x, bool bf16, int64_t M, int64_t K, int64_t Kp,
                               int levels, int zero, uint8_t* xu, float* sx) {
  for (int64_t m = 0; m < M; ++m) {
    const int64_t row = m * K;
    const float amax = row_amax(x, row, K, bf16);
    sx[m] = amax / static_cast<float>(levels);
    const float inv_s = amax > 0.0f ? static_cast<float>(levels) / amax : 0.0f;
    uint8_t* q = xu + m * Kp;
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
      _mm256_storeu_si256(
          reinterpret_cast<__m256i*>(q + k),
          quantize32<true>(x, row + k, bf16, _mm256_set1_ps(inv_s), _mm256_set1_epi32(zero)));
    }
    for (; k < K; ++k) {
      q[k] = static_cast<uint8_t>(std::nearbyint(load1(x, row + k, bf16) * inv_s) + zero);
    }
    std::fill(q + K, q + Kp, static_cast<uint8_t>(zero));
  }
}

// ---------------------------------------------------------------------------------------- AMX
// Xeons since Sapphire Rapids multiply tiles: C (16 x n, fp32 or int32) += A (16 x 64 bytes) .
// B (16 x 4n bytes). Here A is 16 output rows of the weights, loaded with the row stride as they
// lie (no packing), B the activation rows in AMX's pair (bf16) or quad (int8) layout, made once
// per call (a few KB), and C 16 outputs x up to 16 activation rows. The weight stream runs
// faster through tile loads than through vector loads here (bf16: 28-30 against 21-27 GB/s,
// `bench_linear_kernels.py`), and batched takes (8 rows) stop being bound by the vector
// kernels' loads and arithmetic (a decoder layer's bf16 matrices at 8 rows: 1.42 ms on
// `vdpbf16ps`, 1.16 on oneDNN's AMX kernel, 1.06 here). int8 is exact integer arithmetic
// (`tdpbsud`: signed weights x unsigned activations), so it gives the vector kernel's results
// bit for bit. Each block of 16 outputs is one thread's from start to end, so results do not
// depend on the thread count.
#if SMG_HAVE_BF16_PAIRS && defined(__linux__)
#define SMG_HAVE_AMX 1
#define SMG_AMX                                                                                   \
  __attribute__((target(                                                                          \
      "amx-tile,amx-bf16,amx-int8,avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")))

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

constexpr int64_t kAmxRows = 16;  // activation rows per pass (B: 16 words a tile row)

enum AmxFeature : unsigned { kAmxBf16 = 1, kAmxInt8 = 2 };

// The AMX products this CPU and OS allow on the AVX-512 path: AMX-TILE with AMX-BF16 and/or
// AMX-INT8 (CPUID), and Linux's permission for the tile state (arch_prctl ARCH_REQ_XCOMP_PERM
// for XTILEDATA, once per process). SAMPLEMIND_GEN_AMX=0 switches AMX off.
unsigned amx_features() {
  static const unsigned features = [] {
    if (kernel_isa_choice() != Isa::kAvx512) return 0u;
    const char* env = std::getenv("SAMPLEMIND_GEN_AMX");
    if (env != nullptr && (std::string(env) == "0" || std::string(env) == "off")) return 0u;
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24))) return 0u;  // AMX-TILE
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) != 0) {
      return 0u;
    }
    return ((d & (1u << 22)) ? kAmxBf16 : 0u) | ((d & (1u << 25)) ? kAmxInt8 : 0u);
  }();
  return features;
}

// The fewest activation rows that go to AMX: bf16 every product (tile loads stream the weights
// faster even at a single take's 2 rows: 0.96 against 1.06 ms a layer, 24 layers), int8 from 4
// rows (at 2 the vector kernel streams as fast: 0.51 against 0.52 ms; at 8, 0.63 against 0.58).
// `set_amx_min_rows` sets one threshold for both (benchmarks and tests compare the paths in one
// process); -1 restores these.
std::atomic<int64_t> g_amx_min_rows{-1};

bool use_amx(AmxFeature feature, int64_t M, int64_t N) {
  int64_t least = g_amx_min_rows.load(std::memory_order_relaxed);
  if (least < 0) least = feature == kAmxInt8 ? 4 : 1;
  return N % 16 == 0 && M >= least && (amx_features() & feature) != 0;
}

// Rows m0 .. m0 + mg of x (`row` bytes each, back to back) as AMX's B operand: each 4-byte word
// of tile row r holds one activation row's 4 bytes at byte offset 4r of each 64-byte block (a
// bf16 pair or four int8 values); zero from `row` to `padded`.
void pack_words(const uint8_t* x, int64_t row, int64_t padded, int64_t m0, int64_t mg,
                uint32_t* b) {
  for (int64_t m = 0; m < mg; ++m) {
    const uint8_t* r = x + (m0 + m) * row;
    for (int64_t k = 0; k < padded; k += 4) {
      uint32_t word = 0;
      if (k + 4 <= row) std::memcpy(&word, r + k, 4);
      else if (k < row) std::memcpy(&word, r + k, row - k);
      b[(k / 4) * mg + m] = word;
    }
  }
}

// Tiles 0 (C: 16 outputs x mg rows), 1 (B: the activations) and 2 (A: 16 weight rows of 64
// bytes) for mg activation rows.
SMG_AMX inline void load_tiles_config(int64_t mg) {
  TileConfig cfg;
  cfg.rows[0] = cfg.rows[1] = cfg.rows[2] = 16;
  cfg.colsb[0] = cfg.colsb[1] = static_cast<uint16_t>(mg * 4);
  cfg.colsb[2] = 64;
  _tile_loadconfig(&cfg);
}

// C tiles for output blocks nb0 .. nb1 (16 outputs each) and mg activation rows: A is the weights
// (`row` bytes a row, `row` a multiple of 64), B the packed activations. Block nb's 16 x mg
// results (fp32 for bf16, int32 for int8), row-major by output, go to c + 16 * mg * nb.
template <bool kInt8>
SMG_AMX void amx_blocks(const uint8_t* w, int64_t row, const uint32_t* b, int64_t mg, int64_t nb0,
                        int64_t nb1, uint32_t* c) {
  load_tiles_config(mg);
  const int64_t bstride = mg * 4;
  // One block of 16 outputs at a time: two blocks sharing each activation load measured the
  // same (the weight stream bounds it), and so did software prefetch.
  for (int64_t nb = nb0; nb < nb1; ++nb) {
    const uint8_t* wn = w + nb * 16 * row;
    _tile_zero(0);
    for (int64_t k = 0; k < row; k += 64) {
      _tile_loadd(1, b + (k / 4) * mg, bstride);
      _tile_loadd(2, wn + k, row);
      if constexpr (kInt8) _tile_dpbsud(0, 2, 1);
      else _tile_dpbf16ps(0, 2, 1);
    }
    _tile_stored(0, c + 16 * mg * nb, bstride);
  }
  _tile_release();
}

// x (M rows of `x_row` bytes, read as rows of `padded` bytes, zero past x_row) times the weights
// on tiles, activation rows in groups of 16: `blocks(b, mg, nb0, nb1, c)` makes the C tiles of
// output blocks nb0 .. nb1 from the packed activations b (as `amx_blocks`), and output n of row m
// is value(n, m, its tile word) + bias[n], then GELU when asked, in x's shape and the
// activations' dtype. `value` runs on the thread that made the tile,
// outside the AMX function, so its arithmetic compiles as the vector kernels' epilogues do.
// The buffers (packed activations, tiles) are the calling thread's and kept between calls: with
// a 64 KB mmap threshold (the app's until 2026-12-06) a fresh 256 KB buffer per call was mapped
// and faulted in anew each time.
template <typename Blocks, typename Value>
at::Tensor amx_products(const at::Tensor& x, const at::Tensor& xc, const uint8_t* xs,
                        int64_t x_row, int64_t padded, int64_t M, int64_t N,
                        const std::optional<at::Tensor>& bias, c10::string_view activation,
                        Blocks blocks, Value value) {
  thread_local std::vector<uint32_t> b, c;
  const int64_t rows = std::min(kAmxRows, M);
  if (static_cast<int64_t>(b.size()) < padded / 4 * rows) b.resize(padded / 4 * rows);
  if (static_cast<int64_t>(c.size()) < N * rows) c.resize(N * rows);
  uint32_t* packed = b.data();  // not `b` in the workers: a thread_local name is per thread
  uint32_t* tiles = c.data();
  const bool gelu = gelu_or_none(activation);
  const Outputs o = outputs_for(x, xc, M, N);
  float* y = o.y;
  const at::Tensor bias_f = float_bias(bias);
  const float* bp = bias_f.defined() ? bias_f.data_ptr<float>() : nullptr;
  const bool one_group = M <= kAmxRows;  // then each thread finishes its own outputs
  for (int64_t m0 = 0; m0 < M; m0 += kAmxRows) {
    const int64_t mg = std::min(kAmxRows, M - m0);
    pack_words(xs, x_row, padded, m0, mg, packed);
    at::parallel_for(0, N / 16, 2, [&](int64_t nb0, int64_t nb1) {
      blocks(packed, mg, nb0, nb1, tiles);
      for (int64_t n = nb0 * 16; n < nb1 * 16; ++n) {
        const uint32_t* words = tiles + 16 * mg * (n / 16) + (n % 16) * mg;
        const float add = bp ? bp[n] : 0.0f;
        for (int64_t i = 0; i < mg; ++i) y[(m0 + i) * N + n] = value(n, m0 + i, words[i]) + add;
      }
      if (one_group) finish_range(o, M, N, nb0 * 16, nb1 * 16, gelu);
    });
  }
  if (!one_group) {
    at::parallel_for(0, N / 16, 2, [&](int64_t nb0, int64_t nb1) {
      finish_range(o, M, N, nb0 * 16, nb1 * 16, gelu);
    });
  }
  return o.out;
}

// `amx_products` with the weights' plain rows (`w_row` bytes, a multiple of 64) as A.
template <bool kInt8, typename Value>
at::Tensor amx_linear(const at::Tensor& x, const at::Tensor& xc, const uint8_t* xs, int64_t x_row,
                      int64_t M, const void* weight, int64_t w_row, int64_t N,
                      const std::optional<at::Tensor>& bias, c10::string_view activation,
                      Value value) {
  const uint8_t* w = static_cast<const uint8_t*>(weight);
  return amx_products(x, xc, xs, x_row, w_row, M, N, bias, activation,
                      [&](const uint32_t* b, int64_t mg, int64_t nb0, int64_t nb1, uint32_t* c) {
                        amx_blocks<kInt8>(w, w_row, b, mg, nb0, nb1, c);
                      },
                      value);
}
#else
#define SMG_HAVE_AMX 0
#endif

template <int MB>
SMG_AVX512 inline void dot_rows_int8(const int8_t* w, const uint8_t* xu, int64_t Kp, int32_t* dots) {
  // Four accumulators per row: vpdpbusd's latency, not its throughput, bounds one chain.
  __m512i acc[MB][4];
  for (int m = 0; m < MB; ++m)
    for (int j = 0; j < 4; ++j) acc[m][j] = _mm512_setzero_si512();
  int64_t k = 0;
  for (; k + 256 <= Kp; k += 256) {
    for (int j = 0; j < 4; ++j) {
        _mm_prefetch(reinterpret_cast<const char*>(w + k + 64 * j + kPrefetch), _MM_HINT_T0);
      const __m512i wv = _mm512_loadu_si512(w + k + 64 * j);
      for (int m = 0; m < MB; ++m) {
        acc[m][j] = _mm512_dpbusd_epi32(acc[m][j], _mm512_loadu_si512(xu + m * Kp + k + 64 * j), wv);
      }
    }
  }
  for (; k < Kp; k += 64) {
    const __m512i wv = _mm512_loadu_si512(w + k);
    for (int m = 0; m < MB; ++m) {
      acc[m][0] = _mm512_dpbusd_epi32(acc[m][0], _mm512_loadu_si512(xu + m * Kp + k), wv);
    }
  }
  for (int m = 0; m < MB; ++m) {
    __m512i s = _mm512_add_epi32(_mm512_add_epi32(acc[m][0], acc[m][1]),
                                 _mm512_add_epi32(acc[m][2], acc[m][3]));
    dots[m] = _mm512_reduce_add_epi32(s);
  }
}

// `dot_rows_int8` for four consecutive outputs (rows of w) at once: dots[o * MB + m]. Each
// activation load serves four weight rows, one reduction per sum instead of four, and each row
// prefetches its line of the next block of four (4 * Kp ahead: within 4 KB the next block for
// K = 1024, where a fixed 4 KB ahead of a 4 KB row would fetch a row this block already reads)
// into L1, and its line kL2AheadRows rows ahead into L2.
// Read cold on 2 cores, 2 rows: 4096 x 1024 29.5 -> 33.9 GB/s, 1024 x 4096 32.5 -> 37.6,
// 1024 x 1024 35.1 -> 37.5 against one output at a time (standalone loop, interleaved runs).
template <int MB>
SMG_AVX512 inline void dot4_rows_int8(const int8_t* w, const uint8_t* xu, int64_t Kp,
                                      int32_t* dots) {
  __m512i acc[4][MB];
  for (int o = 0; o < 4; ++o)
    for (int m = 0; m < MB; ++m) acc[o][m] = _mm512_setzero_si512();
  const int64_t ahead = 4 * Kp;
  const int64_t far = kL2AheadRows * Kp;
  const bool l1 = l1_prefetch();
  for (int64_t k = 0; k < Kp; k += 64) {
    __m512i xv[MB];
    for (int m = 0; m < MB; ++m) xv[m] = _mm512_loadu_si512(xu + m * Kp + k);
    for (int o = 0; o < 4; ++o) {
      const int8_t* r = w + o * Kp + k;
      if (l1) _mm_prefetch(reinterpret_cast<const char*>(r + ahead), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(r + far), _MM_HINT_T1);
      const __m512i wv = _mm512_loadu_si512(r);
      for (int m = 0; m < MB; ++m) acc[o][m] = _mm512_dpbusd_epi32(acc[o][m], xv[m], wv);
    }
  }
  for (int o = 0; o < 4; ++o)
    for (int m = 0; m < MB; ++m) dots[o * MB + m] = _mm512_reduce_add_epi32(acc[o][m]);
}

// `dot_rows_int8` on 256-bit registers.
template <int MB, bool kVnni>
SMG_AVXVNNI inline void dot_rows_int8_256(const int8_t* w, const uint8_t* xu, int64_t Kp,
                                          int32_t* dots) {
  __m256i acc[MB][2];
  for (int m = 0; m < MB; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_si256();
  for (int64_t k = 0; k < Kp; k += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(w + k + kPrefetch), _MM_HINT_T0);
    for (int j = 0; j < 2; ++j) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k + 32 * j));
      for (int m = 0; m < MB; ++m) {
        const __m256i xv =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xu + m * Kp + k + 32 * j));
        acc[m][j] = dot4<kVnni>(acc[m][j], xv, wv);
      }
    }
  }
  for (int m = 0; m < MB; ++m) dots[m] = hsum8i(_mm256_add_epi32(acc[m][0], acc[m][1]));
}

// `dot4_rows_int8` on 256-bit registers, for one or two rows (at three or four, 16 registers
// do not hold the sums).
template <int MB, bool kVnni>
SMG_AVXVNNI inline void dot4_rows_int8_256(const int8_t* w, const uint8_t* xu, int64_t Kp,
                                           int32_t* dots) {
  static_assert(MB <= 2, "four outputs x two rows fill the 16 registers");
  __m256i acc[4][MB];
  for (int o = 0; o < 4; ++o)
    for (int m = 0; m < MB; ++m) acc[o][m] = _mm256_setzero_si256();
  const int64_t ahead = 4 * Kp;
  const int64_t far = kL2AheadRows * Kp;
  for (int64_t k = 0; k < Kp; k += 32) {
    __m256i xv[MB];
    for (int m = 0; m < MB; ++m) {
      xv[m] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xu + m * Kp + k));
    }
    for (int o = 0; o < 4; ++o) {
      const int8_t* r = w + o * Kp + k;
      if ((k & 63) == 0) {
        _mm_prefetch(reinterpret_cast<const char*>(r + ahead), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(r + far), _MM_HINT_T1);
      }
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r));
      for (int m = 0; m < MB; ++m) acc[o][m] = dot4<kVnni>(acc[o][m], xv[m], wv);
    }
  }
  for (int o = 0; o < 4; ++o)
    for (int m = 0; m < MB; ++m) dots[o * MB + m] = hsum8i(acc[o][m]);
}

inline void int8_rows(Isa isa, int64_t mb, const int8_t* wn, const uint8_t* xr, int64_t Kp,
                      int32_t* dots) {
  with_rows(mb, [&]<int MB>() {
    if (isa == Isa::kAvx512) dot_rows_int8<MB>(wn, xr, Kp, dots);
    else if (isa == Isa::kAvxVnni) dot_rows_int8_256<MB, true>(wn, xr, Kp, dots);
    else dot_rows_int8_256<MB, false>(wn, xr, Kp, dots);
  });
}

at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scales,
                       const at::Tensor& wsum, const std::optional<at::Tensor>& bias,
                       c10::string_view activation) {
  const int64_t K = x.size(-1);
  const int64_t N = weight.size(0);
  const int64_t Kp = weight.size(1);
  TORCH_CHECK(Kp % 64 == 0 && Kp >= K && Kp < K + 64,
              "int8_linear: weight must be (N, K padded to a multiple of 64)");
  TORCH_CHECK(weight.scalar_type() == at::kChar && weight.is_contiguous(),
              "int8_linear: weight must be contiguous int8");
  TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.numel() == N &&
                  wsum.scalar_type() == at::kInt && wsum.numel() == N,
              "int8_linear: scales must be fp32 (N) and wsum int32 (N)");
  const int64_t M = x.numel() / K;
  const at::Tensor xc = activations(x);
  const bool bf16 = xc.scalar_type() == at::kBFloat16;
  const Isa isa = kernel_isa_choice();
  const int levels = isa == Isa::kAvx2 ? 63 : 127;
  const int zero = isa == Isa::kAvx2 ? 64 : 128;
  std::vector<uint8_t> xu(M * Kp);
  std::vector<float> sx(M);
  quantize_rows_u8(xc.data_ptr(), bf16, M, K, Kp, levels, zero, xu.data(), sx.data());
  const int8_t* wp = weight.data_ptr<int8_t>();
  const float* sw = scales.data_ptr<float>();
  const int32_t* ws = wsum.data_ptr<int32_t>();
#if SMG_HAVE_AMX
  if (use_amx(kAmxInt8, M, N)) {  // the same integer sums on tiles
    return amx_linear<true>(x, xc, xu.data(), Kp, M, wp, Kp, N, bias, activation,
                            [&](int64_t n, int64_t m, uint32_t word) {
      const int32_t dot = static_cast<int32_t>(word);
      return sx[m] * sw[n] * static_cast<float>(dot - zero * ws[n]);
    });
  }
#endif
  auto one = [&](int64_t n, int64_t m0, int64_t mb, float* out) {
    const int8_t* wn = wp + n * Kp;
    const uint8_t* xr = xu.data() + m0 * Kp;
    int32_t dots[4];
    int8_rows(isa, mb, wn, xr, Kp, dots);
    for (int64_t i = 0; i < mb; ++i) {
      out[i] = sx[m0 + i] * sw[n] * static_cast<float>(dots[i] - zero * ws[n]);
    }
  };
  if (isa == Isa::kAvx512 || M <= 2) {  // four outputs at a time (the same integer sums)
    return for_each_output4(x, xc, M, N, bias, gelu_or_none(activation),
                            [&](int64_t n, int64_t m0, int64_t mb, float* out) {
      const uint8_t* xr = xu.data() + m0 * Kp;
      int32_t dots[16];
      if (isa == Isa::kAvx512) {
        with_rows(mb, [&]<int MB>() { dot4_rows_int8<MB>(wp + n * Kp, xr, Kp, dots); });
      } else if (isa == Isa::kAvxVnni) {
        if (mb == 1) dot4_rows_int8_256<1, true>(wp + n * Kp, xr, Kp, dots);
        else dot4_rows_int8_256<2, true>(wp + n * Kp, xr, Kp, dots);
      } else {
        if (mb == 1) dot4_rows_int8_256<1, false>(wp + n * Kp, xr, Kp, dots);
        else dot4_rows_int8_256<2, false>(wp + n * Kp, xr, Kp, dots);
      }
      for (int64_t o = 0; o < 4; ++o) {
        for (int64_t i = 0; i < mb; ++i) {
          out[o * mb + i] =
              sx[m0 + i] * sw[n + o] * static_cast<float>(dots[o * mb + i] - zero * ws[n + o]);
        }
      }
    }, one);
  }
  return for_each_output(x, xc, M, N, bias, gelu_or_none(activation), one);
}

// ----------------------------------------------------------------------------- bf16 and fp16
// bf16 or fp16 weights (N, Kp), K zero-padded to Kp (a multiple of 64), x fp32 or bf16 activations:
// y[m, n] = sum_k w[n, k] x[m, k] (+ bias), every product and sum in fp32 (the arithmetic of
// oneDNN's bf16 and fbgemm's fp16 linear). The weights are widened to fp32 as they stream in
// (a shift for bf16, vcvtph2ps for fp16); at decode shapes that costs less than the memory
// stream, which bounds the product.

// M rows of K activations (fp32 or bf16) -> fp32 rows of Kp (the padding left as it is: zero).
SMG_AVX2 void widen_rows(const void* x, bool bf16, int64_t M, int64_t K, int64_t Kp, float* xf) {
  for (int64_t m = 0; m < M; ++m) {
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) _mm256_storeu_ps(xf + m * Kp + k, load8(x, m * K + k, bf16));
    for (; k < K; ++k) xf[m * Kp + k] = load1(x, m * K + k, bf16);
  }
}

template <bool kHalf>
SMG_AVX512 inline __m512 widen16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  if constexpr (kHalf) return _mm512_cvtph_ps(h);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

template <bool kHalf>
SMG_AVX2 inline __m256 widen8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (kHalf) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

constexpr int64_t kHalfPrefetch = kPrefetch / 2;  // in 2-byte weights

template <int MB, bool kHalf>
SMG_AVX512 inline void dot_rows_half(const uint16_t* w, const float* x, int64_t Kp, float* dots) {
  __m512 acc[MB][2];
  for (int m = 0; m < MB; ++m) acc[m][0] = acc[m][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < Kp; k += 64) {  // 128 bytes of weights: two cache lines
    _mm_prefetch(reinterpret_cast<const char*>(w + k + kHalfPrefetch), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + k + 32 + kHalfPrefetch), _MM_HINT_T0);
    for (int j = 0; j < 4; ++j) {
      const __m512 wv = widen16<kHalf>(w + k + 16 * j);
      for (int m = 0; m < MB; ++m) {
        acc[m][j & 1] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + m * Kp + k + 16 * j), acc[m][j & 1]);
      }
    }
  }
  for (int m = 0; m < MB; ++m) dots[m] = _mm512_reduce_add_ps(_mm512_add_ps(acc[m][0], acc[m][1]));
}

// bf16 weights x bf16 activations with AVX512-BF16: `vdpbf16ps` multiplies 32 pairs and adds each
// pair's two products into an fp32 lane, so there is nothing to widen and half as many
// instructions and activation loads. On this Xeon it measured as fast as widening at 2 rows
// (the memory stream bounds both) and at 8 (batched takes: 0.52 vs 0.51 ms for 4096 x 1024).
#if SMG_HAVE_BF16_PAIRS
template <int MB>
SMG_AVX512BF16 inline void dot_rows_bf16_pairs(const uint16_t* w, const uint16_t* x, int64_t Kp,
                                               float* dots) {
  __m512 acc[MB][2];
  for (int m = 0; m < MB; ++m) acc[m][0] = acc[m][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < Kp; k += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(w + k + kHalfPrefetch), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + k + 32 + kHalfPrefetch), _MM_HINT_T0);
    for (int j = 0; j < 2; ++j) {
      const __m512bh wv = (__m512bh)_mm512_loadu_si512(w + k + 32 * j);
      for (int m = 0; m < MB; ++m) {
        const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + m * Kp + k + 32 * j);
        acc[m][j] = _mm512_dpbf16_ps(acc[m][j], xv, wv);
      }
    }
  }
  for (int m = 0; m < MB; ++m) dots[m] = _mm512_reduce_add_ps(_mm512_add_ps(acc[m][0], acc[m][1]));
}

#endif

// AVX512-BF16 on the AVX-512 path (not when a lower path is forced).
bool bf16_pairs_available() {
#if SMG_HAVE_BF16_PAIRS
  static const bool ok = [] {
    __builtin_cpu_init();
    return kernel_isa_choice() == Isa::kAvx512 && __builtin_cpu_supports("avx512bf16");
  }();
  return ok;
#else
  return false;
#endif
}

template <int MB, bool kHalf>
SMG_AVX2 inline void dot_rows_half_256(const uint16_t* w, const float* x, int64_t Kp,
                                       float* dots) {
  constexpr int kChains = MB > 4 ? 1 : 2;  // 16 ymm registers: one chain per row above 4 rows
  __m256 acc[MB][2];
  for (int m = 0; m < MB; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < Kp; k += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(w + k + kHalfPrefetch), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + k + 32 + kHalfPrefetch), _MM_HINT_T0);
    for (int j = 0; j < 8; ++j) {
      const __m256 wv = widen8<kHalf>(w + k + 8 * j);
      for (int m = 0; m < MB; ++m) {
        acc[m][j % kChains] =
            _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + m * Kp + k + 8 * j), acc[m][j % kChains]);
      }
    }
  }
  for (int m = 0; m < MB; ++m) dots[m] = hsum8(_mm256_add_ps(acc[m][0], acc[m][1]));
}

// One 16-bit weight row (fp16 when `half`, else bf16) against MB rows of fp32 activations, on the
// AVX-512 path when `wide`, else the AVX2 one.
template <int MB>
inline void half_rows(bool wide, bool half, const uint16_t* w, const float* x, int64_t Kp,
                      float* dots) {
  if (wide) {
    if (half) dot_rows_half<MB, true>(w, x, Kp, dots);
    else dot_rows_half<MB, false>(w, x, Kp, dots);
  } else {
    if (half) dot_rows_half_256<MB, true>(w, x, Kp, dots);
    else dot_rows_half_256<MB, false>(w, x, Kp, dots);
  }
}

at::Tensor half_linear(const at::Tensor& x, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, c10::string_view activation) {
  const int64_t K = x.size(-1);
  const int64_t N = weight.size(0);
  const int64_t Kp = weight.size(1);
  TORCH_CHECK(Kp % 64 == 0 && Kp >= K && Kp < K + 64,
              "half_linear: weight must be (N, K padded to a multiple of 64)");
  TORCH_CHECK((weight.scalar_type() == at::kBFloat16 || weight.scalar_type() == at::kHalf) &&
                  weight.is_contiguous(),
              "half_linear: weight must be contiguous bf16 or fp16");
  const bool half = weight.scalar_type() == at::kHalf;
  const int64_t M = x.numel() / K;
  const at::Tensor xc = activations(x);
  const bool bf16 = xc.scalar_type() == at::kBFloat16;
  const uint16_t* wp = static_cast<const uint16_t*>(weight.data_ptr());
  const bool wide = kernel_isa_choice() == Isa::kAvx512;
#if SMG_HAVE_AMX
  if (!half && bf16 && use_amx(kAmxBf16, M, N)) {  // bf16 x bf16 on tiles
    return amx_linear<false>(x, xc, static_cast<const uint8_t*>(xc.data_ptr()), 2 * K, M, wp,
                             2 * Kp, N, bias, activation,
                             [](int64_t, int64_t, uint32_t word) {
      return std::bit_cast<float>(word);
    });
  }
#endif
#if SMG_HAVE_BF16_PAIRS
  if (!half && bf16 && bf16_pairs_available()) {  // bf16 x bf16: pairs, no widening
    uint16_t* xb = scratch<uint16_t, 0>(M * Kp);
    std::fill(xb, xb + M * Kp, static_cast<uint16_t>(0));
    const uint16_t* xs = static_cast<const uint16_t*>(xc.data_ptr());
    for (int64_t m = 0; m < M; ++m) std::copy(xs + m * K, xs + (m + 1) * K, xb + m * Kp);
    return for_each_output<8>(x, xc, M, N, bias, gelu_or_none(activation),
                              [&](int64_t n, int64_t m0, int64_t mb, float* out) {
      const uint16_t* xr = xb + m0 * Kp;
      with_rows8(mb, [&]<int MB>() { dot_rows_bf16_pairs<MB>(wp + n * Kp, xr, Kp, out); });
    });
  }
#endif
  float* xf = scratch<float, 1>(M * Kp);
  std::fill(xf, xf + M * Kp, 0.0f);
  widen_rows(xc.data_ptr(), bf16, M, K, Kp, xf);
  return for_each_output<8>(x, xc, M, N, bias, gelu_or_none(activation),
                         [&](int64_t n, int64_t m0, int64_t mb, float* out) {
    const uint16_t* wn = wp + n * Kp;
    const float* xr = xf + m0 * Kp;
    with_rows8(mb, [&]<int MB>() { half_rows<MB>(wide, half, wn, xr, Kp, out); });
  });
}

// ------------------------------------------------------------------------------ compact bf16
// bf16 weights stored losslessly in 12 bits instead of 16. A bf16 number's high byte (sign and
// the exponent's top 7 bits) takes few values in a weight row (two signs x a few binades), so
// each row keeps a table of 16 high bytes (0x00 and its 15 most frequent) and each weight a
// 4-bit code into it; the low byte (the exponent's lowest bit and the 7 mantissa bits) is
// stored as it is. A decode step
// reads every weight once and is bound by the memory's speed, so reading a quarter fewer bytes
// makes it faster while the numbers stay the bf16 model's bit for bit (the products and sums
// are the bf16 kernels' arithmetic: bf16 x bf16 products summed in fp32).
//
// Layout, per output row n (`compact_bf16_pack`), K zero-padded to Kp (a multiple of 128),
// Kp / 2 * 3 bytes a row, one 192-byte group per 128 inputs k0 .. k0 + 127:
//   64 low bytes of inputs k0 .. k0 + 63, 64 low bytes of k0 + 64 .. k0 + 127, then 64 code
//   bytes: byte j's low nibble is the code of the first block's byte j, its high nibble the
//   second block's. Within a block of 64, byte j (lane l = j / 16, t = j % 16) holds input
//   8l + t (t < 8) or 32 + 8l + t - 8 (t >= 8), so vpunpcklbw / vpunpckhbw of the low bytes with
//   their looked-up high bytes give inputs 0-31 and 32-63 in order, as bf16 words.
//   table (N, 16) uint8: code -> high byte; code 0 is always 0x00 (zero and positive numbers
//   below 2^-125, which the low byte then holds exactly).
//   exceptions int32: N + 1 offsets, then (input, bf16 bits) pairs: the weights whose high byte
//   is not in their row's table (~2e-5 of a normally distributed row), stored as code 0 with a
//   zero low byte (exactly 0 in the products) and added apart.
constexpr int64_t kCompactGroup = 128;

inline int64_t compact_row_bytes(int64_t Kp) { return Kp / 2 * 3; }

// The input (0..63) that byte j of a 64-byte block of low bytes holds.
inline int64_t compact_block_input(int64_t j) {
  const int64_t lane = j / 16, t = j % 16;
  return t < 8 ? 8 * lane + t : 32 + 8 * lane + t - 8;
}

// A row's table of high bytes: 0x00, then the 15 most frequent others (ties: lower byte first).
// Returns how many of the row's weights have no code (its exceptions).
int32_t compact_row_table(const uint16_t* row, int64_t K, uint8_t* table) {
  int32_t count[256] = {};
  for (int64_t k = 0; k < K; ++k) ++count[row[k] >> 8];
  std::pair<int32_t, int> seen[255];  // (-count, high byte) of the bytes that occur
  int distinct = 0;
  for (int h = 1; h < 256; ++h) {
    if (count[h] > 0) seen[distinct++] = {-count[h], h};
  }
  const int kept = std::min(distinct, 15);
  std::partial_sort(seen, seen + kept, seen + distinct);
  std::fill(table, table + 16, static_cast<uint8_t>(0));
  int32_t missing = static_cast<int32_t>(K) - count[0];
  for (int c = 1; c <= kept; ++c) {
    table[c] = static_cast<uint8_t>(seen[c - 1].second);
    missing += seen[c - 1].first;
  }
  return missing;
}

// (out, in) fp32/fp16/bf16 weights -> the int8 kernel's operands in one pass per row: levels
// round(w / s) clamped to +-127 (ties to even, as torch.round) with the inputs zero-padded to a
// multiple of 64, one fp32 scale s = max(max |w|, 1e-12) / 127 per output, and each output's
// sum of levels. The same numbers as musicgen_quant's PyTorch version, bit for bit, without its
// eight passes and their temporaries (musicgen-small's decoder: 2.2 -> 0.75 s of an int8 load).
template <typename T>
void int8_pack_rows(const T* w, int64_t N, int64_t K, int64_t Kp, int8_t* q, float* scales,
                    int32_t* wsum) {
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    std::vector<float> row(K);
    for (int64_t n = n0; n < n1; ++n) {
      float amax = 0.0f;
      for (int64_t k = 0; k < K; ++k) {
        row[k] = static_cast<float>(w[n * K + k]);
        amax = std::max(amax, std::fabs(row[k]));
      }
      const float s = std::max(amax, 1e-12f) / 127.0f;
      scales[n] = s;
      int32_t sum = 0;
      int8_t* out = q + n * Kp;
      for (int64_t k = 0; k < K; ++k) {
        const float level = std::nearbyint(row[k] / s);
        const int8_t v = static_cast<int8_t>(std::min(127.0f, std::max(-127.0f, level)));
        out[k] = v;
        sum += v;
      }
      std::fill(out + K, out + Kp, static_cast<int8_t>(0));
      wsum[n] = sum;
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> int8_pack(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && (weight.scalar_type() == at::kFloat ||
                                    weight.scalar_type() == at::kHalf ||
                                    weight.scalar_type() == at::kBFloat16),
              "int8_pack: weight must be a 2-D fp32, fp16 or bf16 tensor");
  const at::Tensor w = weight.contiguous();
  const int64_t N = w.size(0), K = w.size(1);
  const int64_t Kp = (K + 63) / 64 * 64;
  at::Tensor q = at::empty({N, Kp}, at::kChar);
  at::Tensor scales = at::empty({N}, at::kFloat);
  at::Tensor wsum = at::empty({N}, at::kInt);
  int8_t* qp = q.data_ptr<int8_t>();
  float* sp = scales.data_ptr<float>();
  int32_t* ws = wsum.data_ptr<int32_t>();
  if (w.scalar_type() == at::kFloat) {
    int8_pack_rows(w.data_ptr<float>(), N, K, Kp, qp, sp, ws);
  } else if (w.scalar_type() == at::kHalf) {
    int8_pack_rows(w.data_ptr<c10::Half>(), N, K, Kp, qp, sp, ws);
  } else {
    int8_pack_rows(w.data_ptr<c10::BFloat16>(), N, K, Kp, qp, sp, ws);
  }
  return {q, scales, wsum};
}

// (out, in) fp32/bf16 weights, in a multiple of 32 -> the 4-bit kernel's operands in one pass
// per row: per group of 32 inputs low = min, scale = max(max - min, 1e-8) / 15, levels
// round((w - low) / scale) clamped to 0..15 (ties to even); 128 inputs to 64 bytes (byte j:
// input j in the low nibble, 64 + j in the high one), K zero-padded to a multiple of 128, and
// fp16 scales and minimums (zero for the padding's groups). musicgen_quant's PyTorch version
// (Int4Linear + pack_nibbles) bit for bit, without its passes and temporaries.
template <typename T>
void int4_pack_rows(const T* w, int64_t N, int64_t K, int64_t Kp, uint8_t* nib, c10::Half* sc,
                    c10::Half* mn) {
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    std::vector<uint8_t> q(Kp);
    for (int64_t n = n0; n < n1; ++n) {
      std::fill(q.begin(), q.end(), static_cast<uint8_t>(0));
      const T* row = w + n * K;
      for (int64_t g = 0; g < Kp / 32; ++g) {
        if (g * 32 >= K) {
          sc[n * (Kp / 32) + g] = c10::Half(0.0f);
          mn[n * (Kp / 32) + g] = c10::Half(0.0f);
          continue;
        }
        float lo = static_cast<float>(row[g * 32]), hi = lo;
        for (int64_t k = 1; k < 32; ++k) {
          const float v = static_cast<float>(row[g * 32 + k]);
          lo = std::min(lo, v);
          hi = std::max(hi, v);
        }
        const float scale = std::max(hi - lo, 1e-8f) / 15.0f;
        for (int64_t k = 0; k < 32; ++k) {
          const float level = std::nearbyint((static_cast<float>(row[g * 32 + k]) - lo) / scale);
          q[g * 32 + k] = static_cast<uint8_t>(std::min(15.0f, std::max(0.0f, level)));
        }
        sc[n * (Kp / 32) + g] = c10::Half(scale);
        mn[n * (Kp / 32) + g] = c10::Half(lo);
      }
      uint8_t* out = nib + n * (Kp / 2);
      for (int64_t b = 0; b < Kp / 128; ++b) {
        for (int64_t j = 0; j < 64; ++j) {
          out[b * 64 + j] = static_cast<uint8_t>(q[b * 128 + j] | (q[b * 128 + 64 + j] << 4));
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> int4_pack(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) % 32 == 0 &&
                  (weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kBFloat16),
              "int4_pack: weight must be a 2-D fp32 or bf16 tensor with inputs in a multiple of 32");
  const at::Tensor w = weight.contiguous();
  const int64_t N = w.size(0), K = w.size(1);
  const int64_t Kp = (K + 127) / 128 * 128;
  at::Tensor nibbles = at::empty({N, Kp / 2}, at::kByte);
  at::Tensor scales = at::empty({N, Kp / 32}, at::kHalf);
  at::Tensor mins = at::empty({N, Kp / 32}, at::kHalf);
  uint8_t* np_ = nibbles.data_ptr<uint8_t>();
  c10::Half* sp = scales.data_ptr<c10::Half>();
  c10::Half* mp = mins.data_ptr<c10::Half>();
  if (w.scalar_type() == at::kFloat) {
    int4_pack_rows(w.data_ptr<float>(), N, K, Kp, np_, sp, mp);
  } else {
    int4_pack_rows(w.data_ptr<c10::BFloat16>(), N, K, Kp, np_, sp, mp);
  }
  return {nibbles, scales, mins};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> compact_bf16_pack(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kBFloat16,
              "compact_bf16_pack: weight must be a 2-D bf16 tensor");
  const at::Tensor w = weight.contiguous();
  const int64_t N = w.size(0), K = w.size(1);
  const int64_t Kp = (K + kCompactGroup - 1) / kCompactGroup * kCompactGroup;
  const int64_t rowb = compact_row_bytes(Kp);
  const uint16_t* wp = reinterpret_cast<const uint16_t*>(w.data_ptr<c10::BFloat16>());
  at::Tensor data = at::empty({N, rowb}, at::kByte);
  at::Tensor table = at::empty({N, 16}, at::kByte);
  uint8_t* dp = data.data_ptr<uint8_t>();
  uint8_t* tp = table.data_ptr<uint8_t>();
  std::vector<int32_t> offsets(N + 1, 0);
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {  // tables, exceptions per row
    for (int64_t n = n0; n < n1; ++n) offsets[n + 1] = compact_row_table(wp + n * K, K, tp + n * 16);
  });
  for (int64_t n = 0; n < N; ++n) offsets[n + 1] += offsets[n];
  at::Tensor exceptions = at::empty({N + 1 + 2 * static_cast<int64_t>(offsets[N])}, at::kInt);
  int32_t* ep = exceptions.data_ptr<int32_t>();
  std::copy(offsets.begin(), offsets.end(), ep);
  int32_t* pairs = ep + N + 1;
  int64_t input_of[64];
  for (int64_t j = 0; j < 64; ++j) input_of[j] = compact_block_input(j);
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    int16_t code[256];
    for (int64_t n = n0; n < n1; ++n) {
      std::fill(code, code + 256, static_cast<int16_t>(-1));
      for (int c = 0; c < 16; ++c) {
        if (c == 0 || tp[n * 16 + c] != 0) code[tp[n * 16 + c]] = static_cast<int16_t>(c);
      }
      const uint16_t* row = wp + n * K;
      int32_t e = offsets[n];
      uint16_t padded[kCompactGroup];
      for (int64_t k0 = 0; k0 < Kp; k0 += kCompactGroup) {
        uint8_t* group = dp + n * rowb + k0 / kCompactGroup * 192;
        const uint16_t* in = row + k0;
        if (k0 + kCompactGroup > K) {  // the last group of a row that K does not fill
          std::fill(padded, padded + kCompactGroup, static_cast<uint16_t>(0));
          std::copy(row + k0, row + K, padded);
          in = padded;
        }
        uint8_t codes[2][64];
        for (int64_t half = 0; half < 2; ++half) {
          for (int64_t j = 0; j < 64; ++j) {
            const int64_t i = 64 * half + input_of[j];
            const uint16_t bits = in[i];
            int16_t c = code[bits >> 8];
            uint8_t low = static_cast<uint8_t>(bits & 0xFF);
            if (c < 0) {  // the exceptions go in the order the kernels add them: this order
              pairs[2 * e] = static_cast<int32_t>(k0 + i);
              pairs[2 * e + 1] = bits;
              ++e;
              c = 0;
              low = 0;
            }
            group[64 * half + j] = low;
            codes[half][j] = static_cast<uint8_t>(c);
          }
        }
        for (int64_t j = 0; j < 64; ++j) group[128 + j] = codes[0][j] | codes[1][j] << 4;
      }
    }
  });
  return {data, table, exceptions};
}

// The (N, K) bf16 weights back from their compact form (tests; bit for bit the packed ones).
at::Tensor compact_bf16_unpack(const at::Tensor& data, const at::Tensor& table,
                               const at::Tensor& exceptions, int64_t K) {
  const int64_t N = data.size(0);
  const int64_t Kp = (K + kCompactGroup - 1) / kCompactGroup * kCompactGroup;
  TORCH_CHECK(data.scalar_type() == at::kByte && data.is_contiguous() &&
                  data.size(1) == compact_row_bytes(Kp) && table.numel() == N * 16,
              "compact_bf16_unpack: data must be (N, Kp / 2 * 3) bytes and table (N, 16)");
  at::Tensor out = at::empty({N, K}, at::kBFloat16);
  uint16_t* op = reinterpret_cast<uint16_t*>(out.data_ptr<c10::BFloat16>());
  const uint8_t* dp = data.data_ptr<uint8_t>();
  const uint8_t* tp = table.contiguous().data_ptr<uint8_t>();
  const at::Tensor ex = exceptions.contiguous();
  const int32_t* ep = ex.data_ptr<int32_t>();
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {  // rows apart: the fold's per take
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t k0 = 0; k0 < Kp; k0 += kCompactGroup) {
        const uint8_t* group = dp + n * compact_row_bytes(Kp) + k0 / kCompactGroup * 192;
        for (int64_t half = 0; half < 2; ++half) {
          for (int64_t j = 0; j < 64; ++j) {
            const int64_t k = k0 + 64 * half + compact_block_input(j);
            const int c = (group[128 + j] >> (4 * half)) & 0xF;
            if (k < K) op[n * K + k] = static_cast<uint16_t>(tp[n * 16 + c] << 8 | group[64 * half + j]);
          }
        }
      }
      for (int32_t e = ep[n]; e < ep[n + 1]; ++e) {
        op[n * K + ep[N + 1 + 2 * e]] = static_cast<uint16_t>(ep[N + 2 + 2 * e]);
      }
    }
  });
  return out;
}

#if SMG_HAVE_BF16_PAIRS
// One 192-byte group of a compact row -> its 128 bf16 weights in order, in four registers.
SMG_AVX512BF16 inline void compact_group(const uint8_t* group, __m512i table, __m512i* w) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512i codes = _mm512_loadu_si512(group + 128);
  const __m512i high0 = _mm512_shuffle_epi8(table, _mm512_and_si512(codes, low4));
  const __m512i high1 = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(codes, 4), low4));
  const __m512i low0 = _mm512_loadu_si512(group);
  const __m512i low1 = _mm512_loadu_si512(group + 64);
  w[0] = _mm512_unpacklo_epi8(low0, high0);
  w[1] = _mm512_unpackhi_epi8(low0, high0);
  w[2] = _mm512_unpacklo_epi8(low1, high1);
  w[3] = _mm512_unpackhi_epi8(low1, high1);
}

SMG_AVX512BF16 inline __m512i compact_table(const uint8_t* table) {
  return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table)));
}

// kOut consecutive outputs (compact rows `rowb` bytes apart) x MB rows of bf16 activations (Kp
// each): dots[o * MB + m], before the exceptions. Each row prefetches its group in the next
// block of outputs (kOut rows ahead) into L1 and the group kL2AheadRows rows ahead into L2, as
// the int8 kernel does: the decoding and `vdpbf16ps` (2 cycles each here; at 2 rows the
// products, not decoding, are most of the arithmetic) keep the core busy enough that the
// hardware's own prefetch alone left the stream at 26 GB/s, against 29-30 with both.
template <int kOut, int MB>
SMG_AVX512BF16 inline void dot_rows_compact(const uint8_t* w, int64_t rowb, const uint8_t* tables,
                                            const uint16_t* x, int64_t Kp, float* dots) {
  __m512 acc[kOut][MB];
  __m512i table[kOut];
  for (int o = 0; o < kOut; ++o) {
    table[o] = compact_table(tables + 16 * o);
    for (int m = 0; m < MB; ++m) acc[o][m] = _mm512_setzero_ps();
  }
  const int64_t ahead = kOut * rowb;
  const int64_t far = kL2AheadRows * rowb;
  const bool l1 = l1_prefetch();
  for (int64_t k = 0; k < Kp; k += kCompactGroup) {
    const int64_t at = k / kCompactGroup * 192;
    for (int o = 0; o < kOut; ++o) {
      const uint8_t* group = w + o * rowb + at;
      if (l1) {
        _mm_prefetch(reinterpret_cast<const char*>(group + ahead), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(group + ahead + 64), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(group + ahead + 128), _MM_HINT_T0);
      }
      _mm_prefetch(reinterpret_cast<const char*>(group + far), _MM_HINT_T1);
      _mm_prefetch(reinterpret_cast<const char*>(group + far + 64), _MM_HINT_T1);
      _mm_prefetch(reinterpret_cast<const char*>(group + far + 128), _MM_HINT_T1);
      __m512i wv[4];
      compact_group(group, table[o], wv);
      for (int q = 0; q < 4; ++q) {
        for (int m = 0; m < MB; ++m) {
          const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + m * Kp + k + 32 * q);
          acc[o][m] = _mm512_dpbf16_ps(acc[o][m], (__m512bh)wv[q], xv);
        }
      }
    }
  }
  for (int o = 0; o < kOut; ++o)
    for (int m = 0; m < MB; ++m) dots[o * MB + m] = _mm512_reduce_add_ps(acc[o][m]);
}
#endif

#if SMG_HAVE_AMX
// `amx_blocks` for compact weights: each block of 16 outputs decodes 128 inputs of its 16 rows
// into four A tiles in an L1 buffer (two buffers in turn), then multiplies them. Tiles do the
// products at any row count for the cost of one (batched takes), where `vdpbf16ps` costs 2
// cycles per row and 32 weights; at 2 rows they stream within ~3% of the vector kernel (24
// layers, cold: 1.32 against 1.35x the plain bf16 tiles; 8 rows 1.28x) and keep what plain bf16
// on tiles guarantees: a row's outputs do not depend on the rows beside it. Each row prefetches
// its next group into L1 (next group: 1.32x; 4 groups ahead 1.24x; the next block of rows
// 1.24x; none 1.13x) and the group kL2AheadRows rows ahead into L2.
SMG_AMX void amx_compact_blocks(const uint8_t* w, int64_t rowb, const uint8_t* tables, int64_t Kp,
                                const uint32_t* b, int64_t mg, int64_t nb0, int64_t nb1,
                                uint32_t* c) {
  load_tiles_config(mg);
  const int64_t bstride = mg * 4;
  alignas(64) uint16_t buffer[2][4][16][32];
  const int64_t far = kL2AheadRows * rowb;
  for (int64_t nb = nb0; nb < nb1; ++nb) {
    const uint8_t* wn = w + nb * 16 * rowb;
    __m512i table[16];
    for (int o = 0; o < 16; ++o) table[o] = compact_table(tables + (nb * 16 + o) * 16);
    _tile_zero(0);
    for (int64_t k = 0; k < Kp; k += kCompactGroup) {
      auto& tiles = buffer[(k / kCompactGroup) & 1];
      const int64_t at = k / kCompactGroup * 192;
      for (int o = 0; o < 16; ++o) {
        const uint8_t* group = wn + o * rowb + at;
        _mm_prefetch(reinterpret_cast<const char*>(group + 192), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(group + 192 + 64), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(group + 192 + 128), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(group + far), _MM_HINT_T1);
        _mm_prefetch(reinterpret_cast<const char*>(group + far + 64), _MM_HINT_T1);
        _mm_prefetch(reinterpret_cast<const char*>(group + far + 128), _MM_HINT_T1);
        __m512i wv[4];
        compact_group(group, table[o], wv);
        for (int q = 0; q < 4; ++q) _mm512_store_si512(tiles[q][o], wv[q]);
      }
      for (int q = 0; q < 4; ++q) {
        _tile_loadd(1, b + (k + 32 * q) / 2 * mg, bstride);
        _tile_loadd(2, tiles[q], 64);
        _tile_dpbf16ps(0, 2, 1);
      }
    }
    _tile_stored(0, c + 16 * mg * nb, bstride);
  }
  _tile_release();
}
#endif

bool compact_bf16_available() {
#if SMG_HAVE_BF16_PAIRS
  return bf16_pairs_available();
#else
  return false;
#endif
}

at::Tensor compact_linear(const at::Tensor& x, const at::Tensor& data, const at::Tensor& table,
                          const at::Tensor& exceptions, const std::optional<at::Tensor>& bias,
                          c10::string_view activation) {
  TORCH_CHECK(compact_bf16_available(),
              "compact_linear: needs AVX512-BF16 (compact_bf16_available() is false here)");
  const int64_t K = x.size(-1);
  const int64_t N = data.size(0);
  const int64_t Kp = (K + kCompactGroup - 1) / kCompactGroup * kCompactGroup;
  const int64_t rowb = compact_row_bytes(Kp);
  TORCH_CHECK(data.scalar_type() == at::kByte && data.is_contiguous() && data.size(1) == rowb,
              "compact_linear: data must be contiguous (N, Kp / 2 * 3) bytes for K = ", K);
  TORCH_CHECK(table.scalar_type() == at::kByte && table.is_contiguous() && table.numel() == N * 16,
              "compact_linear: table must be contiguous (N, 16) bytes");
  TORCH_CHECK(exceptions.scalar_type() == at::kInt && exceptions.is_contiguous() &&
                  exceptions.numel() >= N + 1,
              "compact_linear: exceptions must be contiguous int32 (N + 1 offsets, pairs)");
  const int64_t M = x.numel() / K;
  const at::Tensor xc = activations(x);
  // bf16 activation rows of Kp, zero padded (fp32 activations rounded to bf16, as tiles do).
  uint16_t* xb = scratch<uint16_t, 1>(M * Kp);
  if (xc.scalar_type() == at::kBFloat16) {
    const uint16_t* xs = reinterpret_cast<const uint16_t*>(xc.data_ptr<c10::BFloat16>());
    for (int64_t m = 0; m < M; ++m) {
      std::copy(xs + m * K, xs + (m + 1) * K, xb + m * Kp);
      std::fill(xb + m * Kp + K, xb + (m + 1) * Kp, static_cast<uint16_t>(0));
    }
  } else {
    const float* xs = xc.data_ptr<float>();
    for (int64_t m = 0; m < M; ++m) {
      to_bf16(xs + m * K, xb + m * Kp, 0, K);
      std::fill(xb + m * Kp + K, xb + (m + 1) * Kp, static_cast<uint16_t>(0));
    }
  }
  const uint8_t* wp = data.data_ptr<uint8_t>();
  const uint8_t* tp = table.data_ptr<uint8_t>();
  const int32_t* offsets = exceptions.data_ptr<int32_t>();
  const int32_t* pairs = offsets + N + 1;
  // Output n's exceptions for activation row m.
  const auto excepted = [&](int64_t n, int64_t m) {
    float sum = 0.0f;
    for (int32_t e = offsets[n]; e < offsets[n + 1]; ++e) {
      const float wv = std::bit_cast<float>(static_cast<uint32_t>(pairs[2 * e + 1]) << 16);
      const float xv = std::bit_cast<float>(static_cast<uint32_t>(xb[m * Kp + pairs[2 * e]]) << 16);
      sum += wv * xv;
    }
    return sum;
  };
#if SMG_HAVE_AMX
  if (use_amx(kAmxBf16, M, N)) {  // every row count, as plain bf16: batch-independent
    return amx_products(
        x, xc, reinterpret_cast<const uint8_t*>(xb), 2 * Kp, 2 * Kp, M, N, bias, activation,
        [&](const uint32_t* b, int64_t mg, int64_t nb0, int64_t nb1, uint32_t* c) {
          amx_compact_blocks(wp, rowb, tp, Kp, b, mg, nb0, nb1, c);
        },
        [&](int64_t n, int64_t m, uint32_t word) {
          return std::bit_cast<float>(word) + excepted(n, m);
        });
  }
#endif
#if SMG_HAVE_BF16_PAIRS
  // kOut outputs from n, rows m0 .. m0 + mb: out[o * mb + i].
  const auto outputs = [&]<int kOut>(int64_t n, int64_t m0, int64_t mb, float* out) {
    with_rows(mb, [&]<int MB>() {
      dot_rows_compact<kOut, MB>(wp + n * rowb, rowb, tp + n * 16, xb + m0 * Kp, Kp, out);
    });
    for (int64_t o = 0; o < kOut; ++o)
      for (int64_t i = 0; i < mb; ++i) out[o * mb + i] += excepted(n + o, m0 + i);
  };
  return for_each_output4(
      x, xc, M, N, bias, gelu_or_none(activation),
      [&](int64_t n, int64_t m0, int64_t mb, float* out) {
        outputs.template operator()<4>(n, m0, mb, out);
      },
      [&](int64_t n, int64_t m0, int64_t mb, float* out) {
        outputs.template operator()<1>(n, m0, mb, out);
      });
#else
  TORCH_CHECK(false, "compact_linear: built without AVX512-BF16 support");
#endif
}

// ------------------------------------------------------------------------------------- LSTM
// One layer of a unidirectional LSTM over a sequence (PyTorch's gate order i, f, g, o), with the
// recurrent weights in fp16 or bf16: EnCodec's decoder runs its 2-layer, 1024-unit LSTM once per
// 50 Hz frame, and each frame reads the 4096 x 1024 recurrent matrix (16 MB in fp32), which
// makes it ~40% of a streamed decode. The input projection of every frame is one product done
// before (`gates_x`: x W_ih^T + b_ih + b_hh, fp32). Per frame, each thread takes a slice of the
// hidden units: the four gate rows of each unit (fp32 sums of widened weights, as half_linear),
// then its cell and hidden state, so a frame is one parallel region.

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_layer(const at::Tensor& gates_x,
                                                          const at::Tensor& w_hh,
                                                          const at::Tensor& h0,
                                                          const at::Tensor& c0) {
  TORCH_CHECK(gates_x.dim() == 3 && gates_x.scalar_type() == at::kFloat,
              "lstm_layer: gates_x must be fp32 (steps, batch, 4 * hidden)");
  const int64_t T = gates_x.size(0);
  const int64_t B = gates_x.size(1);
  const int64_t H = gates_x.size(2) / 4;
  const int64_t Kp = w_hh.size(1);
  TORCH_CHECK(gates_x.size(2) == 4 * H && w_hh.size(0) == 4 * H && Kp % 64 == 0 && Kp >= H &&
                  Kp < H + 64,
              "lstm_layer: w_hh must be (4 * hidden, hidden padded to a multiple of 64)");
  TORCH_CHECK((w_hh.scalar_type() == at::kBFloat16 || w_hh.scalar_type() == at::kHalf) &&
                  w_hh.is_contiguous(),
              "lstm_layer: w_hh must be contiguous bf16 or fp16");
  TORCH_CHECK(h0.numel() == B * H && c0.numel() == B * H && h0.scalar_type() == at::kFloat &&
                  c0.scalar_type() == at::kFloat,
              "lstm_layer: h0 and c0 must be fp32 (batch, hidden)");
  const bool half = w_hh.scalar_type() == at::kHalf;
  const bool wide = kernel_isa_choice() == Isa::kAvx512;
  const at::Tensor gx = gates_x.contiguous();
  const float* g = gx.data_ptr<float>();
  const uint16_t* w = static_cast<const uint16_t*>(w_hh.data_ptr());
  // h as rows of Kp (zero padded: the kernel reads whole blocks of 64), two buffers: read one,
  // write the other.
  std::vector<float> hbuf[2] = {std::vector<float>(B * Kp, 0.0f), std::vector<float>(B * Kp, 0.0f)};
  const at::Tensor h0c = h0.contiguous();
  for (int64_t m = 0; m < B; ++m) {
    std::copy(h0c.data_ptr<float>() + m * H, h0c.data_ptr<float>() + (m + 1) * H,
              hbuf[0].data() + m * Kp);
  }
  at::Tensor c = c0.contiguous().clone().view({B, H});
  float* cp = c.data_ptr<float>();
  at::Tensor y = at::empty({T, B, H}, gates_x.options());
  float* yp = y.data_ptr<float>();
  for (int64_t t = 0; t < T; ++t) {
    const float* h = hbuf[t % 2].data();
    float* h_next = hbuf[(t + 1) % 2].data();
    at::parallel_for(0, H, 16, [&](int64_t j0, int64_t j1) {
      float dots[4][4];
      for (int64_t j = j0; j < j1; ++j) {
        for (int64_t m0 = 0; m0 < B; m0 += 4) {
          const int64_t mb = std::min<int64_t>(4, B - m0);
          for (int gate = 0; gate < 4; ++gate) {
            const uint16_t* row = w + (gate * H + j) * Kp;
            const float* xr = h + m0 * Kp;
            float* out = dots[gate];
            with_rows(mb, [&]<int MB>() { half_rows<MB>(wide, half, row, xr, Kp, out); });
          }
          for (int64_t i = 0; i < mb; ++i) {
            const int64_t m = m0 + i;
            const float* gm = g + (t * B + m) * 4 * H;
            const float in = sigmoid(gm[j] + dots[0][i]);
            const float forget = sigmoid(gm[H + j] + dots[1][i]);
            const float cell = std::tanh(gm[2 * H + j] + dots[2][i]);
            const float out = sigmoid(gm[3 * H + j] + dots[3][i]);
            const float c_new = forget * cp[m * H + j] + in * cell;
            cp[m * H + j] = c_new;
            const float h_new = out * std::tanh(c_new);
            h_next[m * Kp + j] = h_new;
            yp[(t * B + m) * H + j] = h_new;
          }
        }
      }
    });
  }
  at::Tensor h_last = at::empty({B, H}, gates_x.options());
  const float* hl = hbuf[T % 2].data();
  for (int64_t m = 0; m < B; ++m) {
    std::copy(hl + m * Kp, hl + m * Kp + H, h_last.data_ptr<float>() + m * H);
  }
  return {y, h_last, c};
}

// The products that run on AMX here: "bf16", "int8", both ("bf16,int8") or "" (for tests and
// benchmarks).
std::string amx_kinds() {
#if SMG_HAVE_AMX
  const unsigned f = amx_features();
  std::string kinds = (f & kAmxBf16) ? "bf16" : "";
  if (f & kAmxInt8) kinds += kinds.empty() ? "int8" : ",int8";
  return kinds;
#else
  return "";
#endif
}

// Sets the fewest activation rows that go to AMX (-1: each kind's own); returns the previous value.
int64_t set_amx_min_rows(int64_t rows) {
#if SMG_HAVE_AMX
  return g_amx_min_rows.exchange(rows);
#else
  return rows;
#endif
}

}  // namespace

namespace samplemind_kernels {
// One of the linear kernels above by kind (the decode step's one-call loop in step_ops.cpp):
// kLinearHalf: t = weight, -, -, bias; kLinearInt8: weight, scales, wsum, bias; kLinearInt4:
// nibbles, scales, mins, bias; kLinearCompact: data, table, exceptions, bias. An empty bias
// tensor is no bias.
at::Tensor packed_linear(int64_t kind, const at::Tensor* t, const at::Tensor& x, bool gelu) {
  const std::optional<at::Tensor> bias =
      t[3].defined() && t[3].numel() > 0 ? std::optional<at::Tensor>(t[3]) : std::nullopt;
  const c10::string_view act = gelu ? "gelu" : "none";
  switch (kind) {
    case kLinearHalf: return half_linear(x, t[0], bias, act);
    case kLinearInt8: return int8_linear(x, t[0], t[1], t[2], bias, act);
    case kLinearInt4: return int4_linear(x, t[0], t[1], t[2], bias, act);
    case kLinearCompact: return compact_linear(x, t[0], t[1], t[2], bias, act);
    default: TORCH_CHECK(false, "packed_linear: unknown kernel kind ", kind);
  }
}
}  // namespace samplemind_kernels

TORCH_LIBRARY(samplemind, m) {
  m.def(
      "int4_linear(Tensor x, Tensor nibbles, Tensor scales, Tensor mins, Tensor? bias, "
      "str activation=\"none\") -> Tensor");
  m.def(
      "int8_linear(Tensor x, Tensor weight, Tensor scales, Tensor wsum, Tensor? bias, "
      "str activation=\"none\") -> Tensor");
  m.def(
      "half_linear(Tensor x, Tensor weight, Tensor? bias, str activation=\"none\") -> Tensor");
  m.def(
      "compact_linear(Tensor x, Tensor data, Tensor table, Tensor exceptions, Tensor? bias, "
      "str activation=\"none\") -> Tensor");
  m.def("compact_bf16_pack(Tensor weight) -> (Tensor, Tensor, Tensor)", &compact_bf16_pack);
  m.def("int8_pack(Tensor weight) -> (Tensor, Tensor, Tensor)", &int8_pack);
  m.def("int4_pack(Tensor weight) -> (Tensor, Tensor, Tensor)", &int4_pack);
  m.def("compact_bf16_unpack(Tensor data, Tensor table, Tensor exceptions, int K) -> Tensor",
        &compact_bf16_unpack);
  m.def("compact_bf16_available() -> bool", &compact_bf16_available);
  m.def("lstm_layer(Tensor gates_x, Tensor w_hh, Tensor h0, Tensor c0) -> (Tensor, Tensor, Tensor)");
  m.def("kernel_isa() -> str", &kernel_isa);
  m.def("amx_kinds() -> str", &amx_kinds);
  m.def("set_amx_min_rows(int rows) -> int", &set_amx_min_rows);
}

TORCH_LIBRARY_IMPL(samplemind, CPU, m) {
  m.impl("int4_linear", &int4_linear);
  m.impl("int8_linear", &int8_linear);
  m.impl("half_linear", &half_linear);
  m.impl("compact_linear", &compact_linear);
  m.impl("lstm_layer", &lstm_layer);
}
