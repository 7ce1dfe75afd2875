// The decode step's pointwise kernels, written once against `Vec` (vec.h) and compiled per path
// by step_ops.cpp, like attention_body.h. No include guard.

// erf-GELU, x * (1 + erf(x / sqrt 2)) / 2, as F.gelu computes it: erf by Abramowitz and Stegun's
// 7.1.26 (absolute error under 1.5e-7) with the exp above.
inline typename Vec::R gelu(typename Vec::R x) {
  using R = typename Vec::R;
  const R z = Vec::mul(Vec::abs(x), Vec::set1(0.70710678118654752f));
  const R t = Vec::div(Vec::set1(1.0f), Vec::fma(z, Vec::set1(0.3275911f), Vec::set1(1.0f)));
  R p = Vec::set1(1.061405429f);
  p = Vec::fma(p, t, Vec::set1(-1.453152027f));
  p = Vec::fma(p, t, Vec::set1(1.421413741f));
  p = Vec::fma(p, t, Vec::set1(-0.284496736f));
  p = Vec::fma(p, t, Vec::set1(0.254829592f));
  p = Vec::mul(p, t);
  const R gauss = exp_nonpositive(Vec::sub(Vec::zero(), Vec::mul(z, z)));
  const R erf_abs = Vec::sub(Vec::set1(1.0f), Vec::mul(p, gauss));
  return Vec::mul(Vec::mul(Vec::set1(0.5f), x), Vec::add(Vec::set1(1.0f), Vec::copysign(erf_abs, x)));
}

inline float gelu(float x) {
  const float z = __builtin_fabsf(x) * 0.70710678118654752f;
  const float t = 1.0f / (1.0f + 0.3275911f * z);
  const float p =
      t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  const float erf_abs = 1.0f - p * exp_nonpositive(-z * z);
  return 0.5f * x * (1.0f + (x < 0.0f ? -erf_abs : erf_abs));
}

inline void gelu_inplace(float* y, int64_t n) {
  int64_t i = 0;
  for (; i + Vec::W <= n; i += Vec::W) Vec::store(y + i, gelu(Vec::load(y + i)));
  for (; i < n; ++i) y[i] = gelu(y[i]);
}

// One row of `x + delta` (rounded to the activations' dtype, as PyTorch's add) and its layer norm
// (fp32 statistics, two passes). `hidden` is a multiple of W.
template <typename S, typename P>
void add_layer_norm_row(const S* x, const S* delta, const P* weight, const P* bias, float eps,
                        int64_t hidden, S* sum, S* normed) {
  using R = typename Vec::R;
  R total = Vec::zero();
  for (int64_t j = 0; j < hidden; j += Vec::W) {
    Vec::store(sum + j, Vec::add(Vec::load(x + j), Vec::load(delta + j)));
    total = Vec::add(total, Vec::load(sum + j));  // the stored (rounded) value
  }
  const float mean = Vec::hsum(total) / static_cast<float>(hidden);
  const R center = Vec::set1(mean);
  R squares = Vec::zero();
  for (int64_t j = 0; j < hidden; j += Vec::W) {
    const R d = Vec::sub(Vec::load(sum + j), center);
    squares = Vec::fma(d, d, squares);
  }
  const float variance = Vec::hsum(squares) / static_cast<float>(hidden);
  const R rstd = Vec::set1(1.0f / __builtin_sqrtf(variance + eps));
  for (int64_t j = 0; j < hidden; j += Vec::W) {
    const R d = Vec::mul(Vec::sub(Vec::load(sum + j), center), rstd);
    Vec::store(normed + j, Vec::fma(d, Vec::load(weight + j), Vec::load(bias + j)));
  }
}

// One float as bf16 bits, rounded to nearest even (finite values), as Vec::store rounds.
inline uint16_t bf16_bits(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

// o += e over n values (a multiple of W, or any n: the tail is scalar), rounded to the
// activations' dtype as PyTorch's add rounds it.
template <typename S>
void add_rows(S* o, const S* e, int64_t n) {
  int64_t j = 0;
  for (; j + Vec::W <= n; j += Vec::W) Vec::store(o + j, Vec::add(Vec::load(o + j), Vec::load(e + j)));
  for (; j < n; ++j) {
    if constexpr (std::is_same_v<S, float>) {
      o[j] += e[j];
    } else {
      o[j] = bf16_bits(as_float(o, j) + as_float(e, j));
    }
  }
}

inline void to_bf16(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + Vec::W <= n; i += Vec::W) Vec::store(dst + i, Vec::load(src + i));
  for (; i < n; ++i) dst[i] = bf16_bits(src[i]);
}

// Softmax of n scores in place (fp32), the exp above: the prompt weights of a folded
// cross-attention (step_ops.cpp `folded_cross`).
inline void softmax_inplace(float* s, int64_t n) {
  using R = typename Vec::R;
  float top = -__builtin_inff();
  for (int64_t t = 0; t < n; ++t) top = s[t] > top ? s[t] : top;
  float sum = 0.0f;
  int64_t t = 0;
  if (n >= Vec::W) {
    R total = Vec::zero();
    const R shift = Vec::set1(top);
    for (; t + Vec::W <= n; t += Vec::W) {
      const R p = exp_nonpositive(Vec::sub(Vec::load(s + t), shift));
      total = Vec::add(total, p);
      Vec::store(s + t, p);
    }
    sum = Vec::hsum(total);
  }
  for (; t < n; ++t) {
    s[t] = exp_nonpositive(s[t] - top);
    sum += s[t];
  }
  const float inv = 1.0f / sum;
  for (t = 0; t < n; ++t) s[t] *= inv;
}
