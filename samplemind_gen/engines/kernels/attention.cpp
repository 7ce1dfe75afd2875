// Single-query attention for MusicGen's decode step on x86 CPUs (built with vnni.cpp into one
// library by samplemind_gen/engines/native_kernels.py).
//
// Each decode step attends one new frame per row and head over the take's cache (self-attention,
// up to 1,500 cached frames for 30 s) and over the prompt's keys and values (cross-attention).
// Through PyTorch that is ~10 small ops per attention (split q/k/v, copy the new key and value
// into the cache, convert, sdpa, merge heads, convert back), 48 attentions a step; sdpa alone
// costs ~45 us a call at short caches. Here each attention is one op: the new key and value are
// written into the cache and the query attends over it in one pass per (row, head), in parallel
// over rows and heads.
//
// Caches are fp32, bf16 or int8. int8 caches keep one fp32 scale per cached row of one head
// (max |x| / 127), half the memory of bf16: a 30 s take's self-attention cache is 148 MB instead
// of 295 MB, and long takes read half as much each step. Scores, softmax and sums are fp32.
//
// The loops are written once (attention_body.h) against a small vector type and compiled twice:
// for AVX-512 (16 lanes) and for AVX2 (8 lanes; CPUs with AVX-VNNI use it too).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "isa.h"

#include <immintrin.h>

#include <bit>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

namespace {

struct SelfArgs {
  const void* qkv;      // (rows, 3 * heads * D): q, k, v side by side, fp32 or bf16
  void* keys;           // (rows, heads, capacity, D)
  void* values;
  float* key_scales;    // (rows, heads, capacity) for int8 caches, else null
  float* value_scales;
  int64_t heads;
  int64_t capacity;
  int64_t position;
  float scale;
  float* out;           // (rows, heads * D) fp32
};

struct CrossArgs {
  const void* q;        // (rows, heads * D), fp32 or bf16
  const void* keys;     // (rows, heads, length, D)
  const void* values;
  const float* bias;    // (rows or 1, length) additive mask, or null
  bool bias_per_row;
  int64_t heads;
  int64_t length;
  float scale;
  float* out;
};

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
namespace avx512 {
struct Vec {
  using R = __m512;
  static constexpr int W = 16;
  static R zero() { return _mm512_setzero_ps(); }
  static R set1(float x) { return _mm512_set1_ps(x); }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static R load(const uint16_t* p) {  // bf16: its bits are the top half of an fp32
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static R load(const int8_t* p) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
  }
  static void store(float* p, R v) { _mm512_storeu_ps(p, v); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static float hsum(R v) { return _mm512_reduce_add_ps(v); }
  static R exp_nonpositive(R x) {
    const __mmask16 tiny = _mm512_cmp_ps_mask(x, set1(-87.0f), _CMP_LT_OQ);
    x = _mm512_max_ps(x, set1(-87.0f));
    const R n = _mm512_roundscale_ps(fma(x, set1(1.44269504088896341f), set1(0.5f)),
                                     _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    R r = _mm512_fnmadd_ps(n, set1(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, set1(-2.12194440e-4f), r);
    R p = set1(1.9875691500e-4f);
    p = fma(p, r, set1(1.3981999507e-3f));
    p = fma(p, r, set1(8.3334519073e-3f));
    p = fma(p, r, set1(4.1665795894e-2f));
    p = fma(p, r, set1(1.6666665459e-1f));
    p = fma(p, r, set1(5.0000001201e-1f));
    p = fma(mul(p, r), r, add(r, set1(1.0f)));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n),
                                                         _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mul_ps(static_cast<__mmask16>(~tiny), p, _mm512_castsi512_ps(e));
  }
};
#include "attention_body.h"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace avx2 {
struct Vec {
  using R = __m256;
  static constexpr int W = 8;
  static R zero() { return _mm256_setzero_ps(); }
  static R set1(float x) { return _mm256_set1_ps(x); }
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static R load(const uint16_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static R load(const int8_t* p) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
  }
  static void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static float hsum(R v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static R exp_nonpositive(R x) {
    const R keep = _mm256_cmp_ps(x, set1(-87.0f), _CMP_GE_OQ);
    x = _mm256_max_ps(x, set1(-87.0f));
    const R n = _mm256_floor_ps(fma(x, set1(1.44269504088896341f), set1(0.5f)));
    R r = _mm256_fnmadd_ps(n, set1(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, set1(-2.12194440e-4f), r);
    R p = set1(1.9875691500e-4f);
    p = fma(p, r, set1(1.3981999507e-3f));
    p = fma(p, r, set1(8.3334519073e-3f));
    p = fma(p, r, set1(4.1665795894e-2f));
    p = fma(p, r, set1(1.6666665459e-1f));
    p = fma(p, r, set1(5.0000001201e-1f));
    p = fma(mul(p, r), r, add(r, set1(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n),
                                                         _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(keep, mul(p, _mm256_castsi256_ps(e)));
  }
};
#include "attention_body.h"
}  // namespace avx2
#pragma GCC pop_options

using SelfFn = void (*)(const SelfArgs&, int64_t, float*);
using CrossFn = void (*)(const CrossArgs&, int64_t, float*);

bool wide() { return samplemind_kernels::kernel_isa_choice() == samplemind_kernels::Isa::kAvx512; }

template <int D, typename S, typename T>
SelfFn self_fn() {
  return wide() ? &avx512::self_task<D, S, T> : &avx2::self_task<D, S, T>;
}

template <int D, typename S, typename T>
CrossFn cross_fn() {
  return wide() ? &avx512::cross_task<D, S, T> : &avx2::cross_task<D, S, T>;
}

// The kernel for a head size, activation dtype and cache dtype (nullptr: not supported).
template <typename Fn, template <int, typename, typename> class Pick>
Fn pick(int64_t d, at::ScalarType act, at::ScalarType cache) {
  auto by_cache = [&]<int D, typename S>() -> Fn {
    switch (cache) {
      case at::kFloat: return Pick<D, S, float>::get();
      case at::kBFloat16: return Pick<D, S, uint16_t>::get();
      case at::kChar: return Pick<D, S, int8_t>::get();
      default: return nullptr;
    }
  };
  auto by_act = [&]<int D>() -> Fn {
    if (act == at::kFloat) return by_cache.template operator()<D, float>();
    if (act == at::kBFloat16) return by_cache.template operator()<D, uint16_t>();
    return nullptr;
  };
  switch (d) {
    case 16: return by_act.template operator()<16>();
    case 32: return by_act.template operator()<32>();
    case 64: return by_act.template operator()<64>();
    case 128: return by_act.template operator()<128>();
    default: return nullptr;
  }
}

template <int D, typename S, typename T>
struct PickSelf {
  static SelfFn get() { return self_fn<D, S, T>(); }
};
template <int D, typename S, typename T>
struct PickCross {
  static CrossFn get() {
    if constexpr (std::is_same_v<T, int8_t>) return nullptr;  // prompt caches: fp32 or bf16
    else return cross_fn<D, S, T>();
  }
};

// Rows x heads tasks, in parallel when there is enough work to share (a short cache is cheaper
// on one thread than the hand-over).
template <typename Args, typename Fn>
void run_tasks(const Args& args, Fn fn, int64_t tasks, int64_t length, int64_t d) {
  const int64_t work = tasks * length * d;
  const int64_t grain = work < 65536 ? tasks : 1;
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(length);
    for (int64_t t = begin; t < end; ++t) fn(args, t, scratch.data());
  });
}

at::Tensor finish(const at::Tensor& out, at::ScalarType dtype) {
  return dtype == at::kFloat ? out : out.to(dtype);
}

// qkv (rows, 1, 3 * width) -> (rows, 1, width): writes the step's key and value at `position`
// of the caches (rows, heads, capacity, D) and attends over positions 0 .. position.
at::Tensor self_attention(const at::Tensor& qkv, at::Tensor& keys, at::Tensor& values,
                          const std::optional<at::Tensor>& key_scales,
                          const std::optional<at::Tensor>& value_scales, int64_t position,
                          double scale) {
  TORCH_CHECK(keys.dim() == 4 && keys.is_contiguous() && values.is_contiguous() &&
                  values.sizes() == keys.sizes() && values.scalar_type() == keys.scalar_type(),
              "self_attention: caches must be contiguous (rows, heads, capacity, head_dim)");
  const int64_t rows = keys.size(0), heads = keys.size(1), capacity = keys.size(2);
  const int64_t d = keys.size(3);
  TORCH_CHECK(qkv.is_contiguous() && qkv.size(-1) == 3 * heads * d && qkv.numel() == rows * 3 * heads * d,
              "self_attention: qkv must be contiguous (rows, 1, 3 * heads * head_dim)");
  TORCH_CHECK(position >= 0 && position < capacity, "self_attention: position past the cache");
  const bool quantized = keys.scalar_type() == at::kChar;
  TORCH_CHECK(!quantized || (key_scales.has_value() && value_scales.has_value() &&
                             key_scales->scalar_type() == at::kFloat &&
                             key_scales->is_contiguous() && value_scales->is_contiguous() &&
                             key_scales->numel() == rows * heads * capacity &&
                             value_scales->numel() == rows * heads * capacity),
              "self_attention: int8 caches need fp32 scales (rows, heads, capacity)");
  const SelfFn fn = pick<SelfFn, PickSelf>(d, qkv.scalar_type(), keys.scalar_type());
  TORCH_CHECK(fn != nullptr, "self_attention: unsupported head size or dtype");
  at::Tensor out = at::empty({rows, 1, heads * d}, qkv.options().dtype(at::kFloat));
  SelfArgs args{qkv.data_ptr(), keys.data_ptr(), values.data_ptr(),
                quantized ? key_scales->data_ptr<float>() : nullptr,
                quantized ? value_scales->data_ptr<float>() : nullptr,
                heads, capacity, position, static_cast<float>(scale), out.data_ptr<float>()};
  run_tasks(args, fn, rows * heads, position + 1, d);
  return finish(out, qkv.scalar_type());
}

// q (rows, 1, width) against the prompt's keys and values (rows, heads, length, D), with an
// optional additive fp32 mask of rows x length (or length) values.
at::Tensor cross_attention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                           const std::optional<at::Tensor>& bias, double scale) {
  TORCH_CHECK(keys.dim() == 4 && keys.is_contiguous() && values.is_contiguous() &&
                  values.sizes() == keys.sizes() && values.scalar_type() == keys.scalar_type(),
              "cross_attention: keys and values must be contiguous (rows, heads, length, head_dim)");
  const int64_t rows = keys.size(0), heads = keys.size(1), length = keys.size(2);
  const int64_t d = keys.size(3);
  TORCH_CHECK(q.is_contiguous() && q.numel() == rows * heads * d,
              "cross_attention: q must be contiguous (rows, 1, heads * head_dim)");
  const float* bias_ptr = nullptr;
  bool per_row = false;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->is_contiguous() &&
                    (bias->numel() == rows * length || bias->numel() == length),
                "cross_attention: the mask must be contiguous fp32, rows x length values");
    bias_ptr = bias->data_ptr<float>();
    per_row = bias->numel() == rows * length && rows > 1;
  }
  const CrossFn fn = pick<CrossFn, PickCross>(d, q.scalar_type(), keys.scalar_type());
  TORCH_CHECK(fn != nullptr, "cross_attention: unsupported head size or dtype");
  at::Tensor out = at::empty({rows, 1, heads * d}, q.options().dtype(at::kFloat));
  CrossArgs args{q.data_ptr(), keys.data_ptr(), values.data_ptr(), bias_ptr, per_row,
                 heads, length, static_cast<float>(scale), out.data_ptr<float>()};
  run_tasks(args, fn, rows * heads, length, d);
  return finish(out, q.scalar_type());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(samplemind, m) {
  m.def(
      "self_attention(Tensor qkv, Tensor(a!) keys, Tensor(b!) values, Tensor(c!)? key_scales, "
      "Tensor(d!)? value_scales, int position, float scale) -> Tensor");
  m.def("cross_attention(Tensor q, Tensor keys, Tensor values, Tensor? bias, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(samplemind, CPU, m) {
  m.impl("self_attention", &self_attention);
  m.impl("cross_attention", &cross_attention);
}
