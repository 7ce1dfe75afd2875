// 4-bit weight x 8-bit activation matrix-vector products for MusicGen's decode step on x86 CPUs
// with AVX512-VNNI (built and loaded by samplemind_gen/engines/native_kernels.py).
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

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

namespace {


// 16 activations as floats, from fp32 or bf16 storage.
inline __m512 load16(const void* p, int64_t i, bool bf16) {
  if (!bf16) return _mm512_loadu_ps(static_cast<const float*>(p) + i);
  const __m256i h = _mm256_loadu_si256(
      reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

inline float load1(const void* p, int64_t i, bool bf16) {
  if (!bf16) return static_cast<const float*>(p)[i];
  return static_cast<float>(static_cast<const c10::BFloat16*>(p)[i]);
}

// fp32 and bf16 activations are read as they are; anything else is converted to fp32 first.
at::Tensor activations(const at::Tensor& x) {
  const bool direct = x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16;
  return (direct ? x : x.to(at::kFloat)).contiguous();
}

// The (M, N) float results into `out` (fp32 or bf16, like the activations).
void store_rows(const float* y, int64_t count, at::Tensor& out) {
  if (out.scalar_type() == at::kFloat) {
    std::copy(y, y + count, out.data_ptr<float>());
  } else {
    c10::BFloat16* o = out.data_ptr<c10::BFloat16>();
    for (int64_t i = 0; i < count; ++i) o[i] = c10::BFloat16(y[i]);
  }
}

// The driver both kernels share: `block(n, m0, mb, out)` computes rows m0 .. m0 + mb (at most 4)
// of output n; this runs it for every n in parallel (each output by one thread, start to end),
// adds the bias and returns x's shape with N outputs, in x's dtype.
template <typename Block>
at::Tensor for_each_output(const at::Tensor& x, const at::Tensor& xc, int64_t M, int64_t N,
                           const std::optional<at::Tensor>& bias, Block block) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = N;
  std::vector<float> result(M * N);
  float* y = result.data();
  const float* bias_ptr = nullptr;
  at::Tensor bias_f;
  if (bias.has_value() && bias->defined()) {
    bias_f = bias->to(at::kFloat).contiguous();
    bias_ptr = bias_f.data_ptr<float>();
  }
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    float part[4];
    for (int64_t n = n0; n < n1; ++n) {
      const float b = bias_ptr ? bias_ptr[n] : 0.0f;
      for (int64_t m0 = 0; m0 < M; m0 += 4) {
        const int64_t mb = std::min<int64_t>(4, M - m0);
        block(n, m0, mb, part);
        for (int64_t i = 0; i < mb; ++i) y[(m0 + i) * N + n] = part[i] + b;
      }
    }
  });
  at::Tensor out = at::empty(shape, xc.options());
  store_rows(y, M * N, out);
  return out;
}

constexpr int64_t kGroup = 32;
constexpr int64_t kBlock = 128;  // inputs per step: 64 bytes of nibbles
constexpr int64_t kPrefetch = 4096;  // bytes ahead in a weight row: hides the stream's start

// M rows of activations (K floats each) -> int8 rows of Kp (zero padded), one scale per row, and
// the exact float sum of each group of 32 inputs (zero for the padding).
void quantize_rows(const void* x, bool bf16, int64_t M, int64_t K, int64_t Kp, int8_t* xq,
                   float* sx, float* xsum) {
  const int64_t groups = K / kGroup;
  const int64_t padded_groups = Kp / kGroup;
  for (int64_t m = 0; m < M; ++m) {
    const int64_t row = m * K;
    __m512 vmax = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 16) {
      vmax = _mm512_max_ps(vmax, _mm512_abs_ps(load16(x, row + k, bf16)));
    }
    const float amax = _mm512_reduce_max_ps(vmax);
    sx[m] = amax / 127.0f;
    const __m512 inv = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    int8_t* q = xq + m * Kp;
    for (int64_t k = 0; k < K; k += 16) {
      __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(load16(x, row + k, bf16), inv));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + k), _mm512_cvtsepi32_epi8(v));
    }
    std::fill(q + K, q + Kp, static_cast<int8_t>(0));
    float* sums = xsum + m * padded_groups;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t v = row + g * kGroup;
      sums[g] = _mm512_reduce_add_ps(_mm512_add_ps(load16(x, v, bf16), load16(x, v + 16, bf16)));
    }
    std::fill(sums + groups, sums + padded_groups, 0.0f);
  }
}

// Rows m0 .. m0 + MB of the product for one output n (before the row scales and the bias).
template <int MB>
inline void dot_rows(const uint8_t* nib, const c10::Half* scales, const c10::Half* mins,
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

at::Tensor int4_linear(const at::Tensor& x, const at::Tensor& nibbles, const at::Tensor& scales,
                       const at::Tensor& mins, const std::optional<at::Tensor>& bias) {
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
  return for_each_output(x, xc, M, N, bias, [&](int64_t n, int64_t m0, int64_t mb, float* out) {
    const uint8_t* wn = nib + n * (Kp / 2);
    const c10::Half* sn = sc + n * groups;
    const c10::Half* mnn = mn + n * groups;
    const int8_t* xr = xq.data() + m0 * Kp;
    const float* sr = xsum.data() + m0 * groups;
    float dots[4];
    float zero_terms[4];
    switch (mb) {
      case 1: dot_rows<1>(wn, sn, mnn, xr, sr, Kp, dots, zero_terms); break;
      case 2: dot_rows<2>(wn, sn, mnn, xr, sr, Kp, dots, zero_terms); break;
      case 3: dot_rows<3>(wn, sn, mnn, xr, sr, Kp, dots, zero_terms); break;
      default: dot_rows<4>(wn, sn, mnn, xr, sr, Kp, dots, zero_terms); break;
    }
    for (int64_t i = 0; i < mb; ++i) out[i] = sx[m0 + i] * dots[i] + zero_terms[i];
  });
}


// ---------------------------------------------------------------------------------------- int8
// int8 weights (one fp32 scale per output row, symmetric) x uint8 activations (one scale per
// row, zero point 128): y[m, n] = sx[m] * sw[n] * (sum_k xu[m,k] w[n,k] - 128 * wsum[n]) + bias,
// with xu = round(x / sx) + 128 and wsum[n] = sum_k w[n, k]. The same arithmetic as fbgemm's
// dynamic int8 linear (u8 activations, s8 weights, vpdpbusd) with per-row activation scales.
// Weights (N, Kp) int8, K zero-padded to Kp, a multiple of 64.

void quantize_rows_u8(const void* x, bool bf16, int64_t M, int64_t K, int64_t Kp, uint8_t* xu,
                      float* sx) {
  for (int64_t m = 0; m < M; ++m) {
    const int64_t row = m * K;
    __m512 vmax = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      vmax = _mm512_max_ps(vmax, _mm512_abs_ps(load16(x, row + k, bf16)));
    }
    float amax = _mm512_reduce_max_ps(vmax);
    for (; k < K; ++k) amax = std::max(amax, std::abs(load1(x, row + k, bf16)));
    sx[m] = amax / 127.0f;
    const float inv_s = amax > 0.0f ? 127.0f / amax : 0.0f;
    const __m512 inv = _mm512_set1_ps(inv_s);
    const __m512i offset = _mm512_set1_epi32(128);
    uint8_t* q = xu + m * Kp;
    for (k = 0; k + 16 <= K; k += 16) {
      __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(load16(x, row + k, bf16), inv));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + k),
                       _mm512_cvtusepi32_epi8(_mm512_add_epi32(v, offset)));
    }
    for (; k < K; ++k) {
      q[k] = static_cast<uint8_t>(std::nearbyint(load1(x, row + k, bf16) * inv_s) + 128);
    }
    std::fill(q + K, q + Kp, static_cast<uint8_t>(128));
  }
}

template <int MB>
inline void dot_rows_int8(const int8_t* w, const uint8_t* xu, int64_t Kp, int32_t* dots) {
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

at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scales,
                       const at::Tensor& wsum, const std::optional<at::Tensor>& bias) {
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
  std::vector<uint8_t> xu(M * Kp);
  std::vector<float> sx(M);
  quantize_rows_u8(xc.data_ptr(), bf16, M, K, Kp, xu.data(), sx.data());
  const int8_t* wp = weight.data_ptr<int8_t>();
  const float* sw = scales.data_ptr<float>();
  const int32_t* ws = wsum.data_ptr<int32_t>();
  return for_each_output(x, xc, M, N, bias, [&](int64_t n, int64_t m0, int64_t mb, float* out) {
    const int8_t* wn = wp + n * Kp;
    const uint8_t* xr = xu.data() + m0 * Kp;
    int32_t dots[4];
    switch (mb) {
      case 1: dot_rows_int8<1>(wn, xr, Kp, dots); break;
      case 2: dot_rows_int8<2>(wn, xr, Kp, dots); break;
      case 3: dot_rows_int8<3>(wn, xr, Kp, dots); break;
      default: dot_rows_int8<4>(wn, xr, Kp, dots); break;
    }
    for (int64_t i = 0; i < mb; ++i) {
      out[i] = sx[m0 + i] * sw[n] * static_cast<float>(dots[i] - 128 * ws[n]);
    }
  });
}

}  // namespace

TORCH_LIBRARY(samplemind, m) {
  m.def("int4_linear(Tensor x, Tensor nibbles, Tensor scales, Tensor mins, Tensor? bias) -> Tensor");
  m.def("int8_linear(Tensor x, Tensor weight, Tensor scales, Tensor wsum, Tensor? bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(samplemind, CPU, m) {
  m.impl("int4_linear", &int4_linear);
  m.impl("int8_linear", &int8_linear);
}
