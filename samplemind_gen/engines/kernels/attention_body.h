// The body of attention.cpp's kernels, written once against `Vec` (W float lanes: one AVX-512
// register or one AVX2 register, defined just before this file is included). attention.cpp
// includes it once per path, each time inside its own namespace and under its own
// `#pragma GCC target`. No include guard: that is the point.

// One value of a cache or query row as float: fp32, bf16 (its bits), int8 (times its row scale,
// applied by the caller).
inline float as_float(const float* p, int64_t j) { return p[j]; }
inline float as_float(const uint16_t* p, int64_t j) {
  return std::bit_cast<float>(static_cast<uint32_t>(p[j]) << 16);
}
inline float as_float(const int8_t* p, int64_t j) { return static_cast<float>(p[j]); }

// exp(x) for x <= 0 (or -inf: 0): Cephes' expf, a degree-6 polynomial on [-ln2/2, ln2/2] times
// 2^n, within ~2 ulp of std::exp. Below -87 it returns 0 (the true value is under 1.7e-38, against
// a largest term of 1). The vector overload below is the same, W lanes at a time.
inline float exp_nonpositive(float x) {
  const bool tiny = x < -87.0f;
  x = tiny ? -87.0f : x;
  const float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float two_n = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return tiny ? 0.0f : p * two_n;
}

inline typename Vec::R exp_nonpositive(typename Vec::R x) {
  using R = typename Vec::R;
  const R clamped = Vec::max(x, Vec::set1(-87.0f));
  const R n = Vec::floor(Vec::fma(clamped, Vec::set1(1.44269504088896341f), Vec::set1(0.5f)));
  R r = Vec::fma(n, Vec::set1(-0.693359375f), clamped);
  r = Vec::fma(n, Vec::set1(2.12194440e-4f), r);
  R p = Vec::set1(1.9875691500e-4f);
  p = Vec::fma(p, r, Vec::set1(1.3981999507e-3f));
  p = Vec::fma(p, r, Vec::set1(8.3334519073e-3f));
  p = Vec::fma(p, r, Vec::set1(4.1665795894e-2f));
  p = Vec::fma(p, r, Vec::set1(1.6666665459e-1f));
  p = Vec::fma(p, r, Vec::set1(5.0000001201e-1f));
  p = Vec::fma(Vec::mul(p, r), r, Vec::add(r, Vec::set1(1.0f)));
  return Vec::zero_below(x, -87.0f, Vec::mul(p, Vec::pow2(n)));
}

// One query row (D floats, already times the softmax scale) against `n` cached rows:
// out = softmax(q . K[t] * ks[t] + bias[t]) @ (V[t] * vs[t]). `ks`, `vs` (int8 caches' row
// scales) and `bias` (an additive mask) may be null. `s` holds n floats of scratch. A row whose
// every position is masked (-inf) gives zeros, as sdpa does.
template <int D, typename T>
inline void attend(const float* __restrict q, const T* __restrict K, const T* __restrict V,
                   const float* __restrict ks, const float* __restrict vs,
                   const float* __restrict bias, int64_t n, float* __restrict s,
                   float* __restrict out, int64_t next) {
  constexpr int kParts = D / Vec::W;
  typename Vec::R qv[kParts];
  for (int i = 0; i < kParts; ++i) qv[i] = Vec::load(q + i * Vec::W);
  // Software prefetch 2 KB ahead of both streams: the caches come from memory (the step's
  // weights went through the CPU caches since this layer's last step), and the hardware
  // prefetcher alone left the loops waiting: 506 -> 364 us a call for an int8 cache of 1,500
  // frames read cold (2 KB ahead measured as good as 4-8 KB at 1,500 frames and better at 200).
  // With `next` (elements from this task's keys and values to the next task's, which the same
  // thread runs after this one), each row read also prefetches the same row of the next task
  // into L2: its stream starts warm instead of from memory. Whole int8 steps, in-process,
  // alternating steps: 1.02-1.04x from 100 cached frames on (the cross-attention's prompt rows
  // too: another 1.01x); bf16 caches ~1.01x. Prefetching the next task's head, or its whole
  // cache, at once had gained nothing (docs/performance.md, "Tried").
  constexpr int64_t kAhead = 2048 / static_cast<int64_t>(sizeof(T) * D) + 1;  // rows ahead
  const auto dot = [&](const T* k) {
    for (int64_t b = 0; b < static_cast<int64_t>(sizeof(T) * D); b += 64) {
      __builtin_prefetch(reinterpret_cast<const char*>(k + kAhead * D) + b);
      __builtin_prefetch(reinterpret_cast<const char*>(k + next) + b, 0, 2);
    }
    typename Vec::R acc = Vec::mul(qv[0], Vec::load(k));
    for (int i = 1; i < kParts; ++i) acc = Vec::fma(qv[i], Vec::load(k + i * Vec::W), acc);
    return acc;
  };
  // Long caches are read as kSeg stretches side by side: one sequential stream per thread left
  // the loops waiting on memory. bf16 caches read cold, us a call at 750 / 1,500 frames: 331-349
  // / 598-634 in one stretch, 308-311 / 550-559 in four; int8 at 1,500: 348-358 against 301-320.
  // Short caches (int8 at 200 frames: 78-85 against 91-93 us) keep one stretch.
  constexpr int kSeg = Vec::W == 16 ? 4 : 2;
  const int segs = n >= 512 ? kSeg : 1;
  const int64_t len = n / segs;
  // Scores W rows at a time, their horizontal sums in one transposing reduction
  // (`Vec::hsum_rows`): one reduction per row was a fifth of a call with the cache in L2.
  int64_t t = 0;
  if (segs == kSeg) {
    constexpr int kRows = Vec::W / kSeg;  // rows per stretch in a group of W
    for (; t + kRows <= len; t += kRows) {
      typename Vec::R part[Vec::W];
      for (int r = 0; r < kRows; ++r) {
        for (int g = 0; g < kSeg; ++g) part[r * kSeg + g] = dot(K + (g * len + t + r) * D);
      }
      alignas(64) float sums[Vec::W];
      Vec::store(sums, Vec::hsum_rows(part));
      for (int r = 0; r < kRows; ++r) {
        for (int g = 0; g < kSeg; ++g) s[g * len + t + r] = sums[r * kSeg + g];
      }
    }
    for (; t < len; ++t) {
      for (int g = 0; g < kSeg; ++g) s[g * len + t] = Vec::hsum(dot(K + (g * len + t) * D));
    }
    t = kSeg * len;
  } else {
    for (; t + Vec::W <= n; t += Vec::W) {
      typename Vec::R part[Vec::W];
      for (int r = 0; r < Vec::W; ++r) part[r] = dot(K + (t + r) * D);
      Vec::store(s + t, Vec::hsum_rows(part));
    }
  }
  for (; t < n; ++t) s[t] = Vec::hsum(dot(K + t * D));
  if (ks != nullptr) {
    for (int64_t t = 0; t < n; ++t) s[t] *= ks[t];
  }
  if (bias != nullptr) {
    for (int64_t t = 0; t < n; ++t) s[t] += bias[t];
  }
  // The largest score, W lanes at a time (a scalar max is one 4-cycle chain over the cache:
  // a sixth of a call with the cache in L2). NaN scores are skipped, as the scalar loop did.
  typename Vec::R tops = Vec::set1(-__builtin_inff());
  for (t = 0; t + Vec::W <= n; t += Vec::W) tops = Vec::max(Vec::load(s + t), tops);
  float top = Vec::hmax(tops);
  for (; t < n; ++t) top = s[t] > top ? s[t] : top;
  if (top == -__builtin_inff()) {
    for (int64_t j = 0; j < D; ++j) out[j] = 0.0f;
    return;
  }
  // Softmax weights (unnormalized), W at a time, then the rest one by one.
  const typename Vec::R shift = Vec::set1(top);
  typename Vec::R total = Vec::zero();
  for (t = 0; t + Vec::W <= n; t += Vec::W) {
    const typename Vec::R p = exp_nonpositive(Vec::sub(Vec::load(s + t), shift));
    total = Vec::add(total, p);
    Vec::store(s + t, vs != nullptr ? Vec::mul(p, Vec::load(vs + t)) : p);
  }
  float sum = Vec::hsum(total);
  for (; t < n; ++t) {
    const float p = exp_nonpositive(s[t] - top);
    sum += p;
    s[t] = vs != nullptr ? p * vs[t] : p;
  }
  typename Vec::R acc[kSeg][kParts];
  for (int g = 0; g < kSeg; ++g)
    for (int i = 0; i < kParts; ++i) acc[g][i] = Vec::zero();
  const auto add_row = [&](int g, int64_t u) {
    const T* v = V + u * D;
    for (int64_t b = 0; b < static_cast<int64_t>(sizeof(T) * D); b += 64) {
      __builtin_prefetch(reinterpret_cast<const char*>(v + kAhead * D) + b);
      __builtin_prefetch(reinterpret_cast<const char*>(v + next) + b, 0, 2);
    }
    const typename Vec::R w = Vec::set1(s[u]);
    for (int i = 0; i < kParts; ++i) acc[g][i] = Vec::fma(w, Vec::load(v + i * Vec::W), acc[g][i]);
  };
  int64_t u = 0;
  if (segs == kSeg) {
    for (; u < len; ++u) {
      for (int g = 0; g < kSeg; ++g) add_row(g, g * len + u);
    }
    u = kSeg * len;
  }
  for (; u < n; ++u) add_row(0, u);
  for (int g = 1; g < kSeg; ++g)
    for (int i = 0; i < kParts; ++i) acc[0][i] = Vec::add(acc[0][i], acc[g][i]);
  const typename Vec::R inv = Vec::set1(1.0f / sum);
  for (int i = 0; i < kParts; ++i) Vec::store(out + i * Vec::W, Vec::mul(acc[0][i], inv));
}

// D values from fp32 / bf16 storage into a cache row: fp32, bf16 (round to nearest even, as
// PyTorch converts) or int8 with one scale (max |x| / 127; returned through `scale`).
template <int D, typename S, typename T>
inline void store_row(const S* x, T* dst, float* /*scale*/) {  // fp32 or bf16 (uint16_t) rows
  for (int64_t j = 0; j < D; j += Vec::W) Vec::store(dst + j, Vec::load(x + j));
}
template <int D, typename S>
inline void store_row(const S* x, int8_t* dst, float* scale) {
  typename Vec::R top = Vec::zero();
  for (int64_t j = 0; j < D; j += Vec::W) top = Vec::max(top, Vec::abs(Vec::load(x + j)));
  const float amax = Vec::hmax(top);
  const float step = amax > 0.0f ? amax / 127.0f : 1.0f;
  const typename Vec::R inv = Vec::set1(1.0f / step);
  for (int64_t j = 0; j < D; j += Vec::W) Vec::store_rounded(dst + j, Vec::mul(Vec::load(x + j), inv));
  *scale = step;
}

// One (row, head) of self-attention: the step's key and value into the cache at `position`,
// then the query against positions 0 .. position.
template <int D, typename S, typename T>
void self_task(const SelfArgs& a, int64_t task, float* scratch) {
  const int64_t row = task / a.heads;
  const int64_t head = task % a.heads;
  const int64_t width = a.heads * D;
  const S* qkv = static_cast<const S*>(a.qkv) + row * 3 * width + head * D;
  const int64_t slot = task * a.capacity;  // (row, head) block of the cache, in rows of D
  T* keys = static_cast<T*>(a.keys) + slot * D;
  T* values = static_cast<T*>(a.values) + slot * D;
  float* ks = a.key_scales == nullptr ? nullptr : a.key_scales + slot;
  float* vs = a.value_scales == nullptr ? nullptr : a.value_scales + slot;
  float unused = 0.0f;
  store_row<D>(qkv + width, keys + a.position * D, ks ? ks + a.position : &unused);
  store_row<D>(qkv + 2 * width, values + a.position * D, vs ? vs + a.position : &unused);
  alignas(64) float q[D];
  for (int64_t j = 0; j < D; ++j) q[j] = as_float(qkv, j) * a.scale;
  if (ks != nullptr) {  // the next task's scales, into L2 (its rows: `attend`'s `next`)
    for (int64_t b = 0; b < (a.position + 1) * 4; b += 64) {
      __builtin_prefetch(reinterpret_cast<const char*>(ks + a.capacity) + b, 0, 2);
      __builtin_prefetch(reinterpret_cast<const char*>(vs + a.capacity) + b, 0, 2);
    }
  }
  attend<D>(q, keys, values, ks, vs, nullptr, a.position + 1, scratch,
            a.out + row * width + head * D, a.capacity * D);
}

// One (row, head) of cross-attention over the prompt's cached keys and values.
template <int D, typename S, typename T>
void cross_task(const CrossArgs& a, int64_t task, float* scratch) {
  const int64_t row = task / a.heads;
  const int64_t head = task % a.heads;
  const int64_t width = a.heads * D;
  const S* qs = static_cast<const S*>(a.q) + row * width + head * D;
  const T* keys = static_cast<const T*>(a.keys) + task * a.length * D;
  const T* values = static_cast<const T*>(a.values) + task * a.length * D;
  const float* bias = a.bias == nullptr ? nullptr : a.bias + (a.bias_per_row ? row * a.length : 0);
  float* out = a.out + row * width + head * D;
  if (bias != nullptr) {
    // A row whose every prompt position is masked (classifier-free guidance's unconditional
    // row: its prompt is all padding) attends to nothing and gives zeros, as `attend` would
    // after reading every key: skipped, half the cross-attention's reads of a guided step.
    int64_t t = 0;
    while (t < a.length && bias[t] == -__builtin_inff()) ++t;
    if (t == a.length) {
      for (int64_t j = 0; j < D; ++j) out[j] = 0.0f;
      return;
    }
  }
  alignas(64) float q[D];
  for (int64_t j = 0; j < D; ++j) q[j] = as_float(qs, j) * a.scale;
  attend<D>(q, keys, values, nullptr, nullptr, bias, a.length, scratch, out, a.length * D);
}
