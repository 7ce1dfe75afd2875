// MusicGen's next-token choice on CPU in one op (built with vnni.cpp and step_ops.cpp into one
// library by samplemind_gen/engines/native_kernels.py): classifier-free guidance, temperature and
// top-k sampling over a step's logits.
//
// Through PyTorch that is ~15 small ops a step (guidance, top-k, the ties check, softmax, the
// Exp(1) noise for every candidate, the draw, gather): ~0.45 ms of a ~14 ms int8 step on a
// 2-core CPU, whose caches the step has just filled with weights. Here it is one pass per row.
//
// The candidates are every logit at or above the k-th largest (ties included, as transformers'
// top-k warper keeps them), in vocabulary order; the pick is the first candidate whose running
// sum of exp(v - max) passes u times their total, u ~ U[0, 1) from the take's own seeded
// torch.Generator (drawn in Python: one number a row, so a take is the same alone or in a
// batch). That is the softmax's distribution over the candidates, as PyTorch's draw gives it,
// from one uniform number a row instead of one Exp(1) number a candidate.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <climits>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

namespace {

// Every function here is built for AVX2 (the kernels' least CPU), without FMA: the guidance is
// rounded as PyTorch's three separate ops round it.
#define SMG_SAMPLING __attribute__((target("avx2")))

// An order-preserving signed key of a float (not NaN; -0 already made +0): a < b exactly when
// key(a) < key(b).
SMG_SAMPLING inline int32_t order_key(float v) {
  int32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return bits < 0 ? bits ^ 0x7FFFFFFF : bits;
}

// The key of the k-th largest of `count` keys (1 <= k <= count): a binary search for the
// largest key t with at least k keys >= t, each count one vectorized pass over the row (the op
// on 4 rows of 2,048: 22 us, against 49 with std::nth_element).
SMG_SAMPLING int32_t kth_largest_key(const int32_t* keys, int64_t count, int64_t k) {
  int64_t lo = INT32_MIN, hi = INT32_MAX;  // count(>= lo) >= k; count(> hi) < k
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    const int32_t t = static_cast<int32_t>(mid);
    int64_t above = 0;
    if (t == INT32_MIN) {
      above = count;
    } else {
      const __m256i below = _mm256_set1_epi32(t - 1);
      __m256i sums[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                         _mm256_setzero_si256()};
      int64_t j = 0;
      for (; j + 32 <= count; j += 32) {  // each lane -1 where keys > t - 1
        for (int a = 0; a < 4; ++a) {
          const __m256i v =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(keys + j + 8 * a));
          sums[a] = _mm256_sub_epi32(sums[a], _mm256_cmpgt_epi32(v, below));
        }
      }
      const __m256i total = _mm256_add_epi32(_mm256_add_epi32(sums[0], sums[1]),
                                             _mm256_add_epi32(sums[2], sums[3]));
      alignas(32) int32_t lanes[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), total);
      for (int32_t lane : lanes) above += lane;
      for (; j < count; ++j) above += keys[j] >= t;
    }
    if (above >= k) lo = mid;
    else hi = mid - 1;
  }
  return static_cast<int32_t>(lo);
}

// logits (R, V): with guidance_scale > 1, R = 2n rows [conditional; unconditional], guided as
// uncond + (cond - uncond) * scale (musicgen_sampling.apply_guidance); else n = R rows as they
// are. Then / temperature (when not 1), and one pick per row among its top_k largest, by
// uniform (n) fp64 in [0, 1). Returns (ids (n) int64, broken (n) bool, how many are broken): a
// broken row has nothing to weigh (a NaN, or every logit -inf) and its id is left 0.
SMG_SAMPLING std::tuple<at::Tensor, at::Tensor, int64_t> sample_top_k(const at::Tensor& logits,
                                                          double guidance_scale,
                                                          double temperature, int64_t top_k,
                                                          const at::Tensor& uniform) {
  TORCH_CHECK(logits.dim() == 2, "sample_top_k: logits must be (rows, vocab)");
  const at::Tensor l = logits.to(at::kFloat).contiguous();
  const bool guided = guidance_scale > 1.0;
  const int64_t rows = l.size(0), vocab = l.size(1);
  TORCH_CHECK(!guided || rows % 2 == 0,
              "sample_top_k: guided logits need [conditional; unconditional] rows");
  const int64_t n = guided ? rows / 2 : rows;
  TORCH_CHECK(uniform.scalar_type() == at::kDouble && uniform.is_contiguous() &&
                  uniform.numel() == n,
              "sample_top_k: uniform must be contiguous fp64, one number a row");
  TORCH_CHECK(top_k > 0 && temperature > 0.0, "sample_top_k: top_k and temperature must be > 0");
  const int64_t k = std::min(top_k, vocab);
  at::Tensor ids = at::zeros({n}, at::kLong);
  at::Tensor broken = at::zeros({n}, at::kBool);
  bool* bad = broken.data_ptr<bool>();
  const float* lp = l.data_ptr<float>();
  const double* up = uniform.data_ptr<double>();
  int64_t* out = ids.data_ptr<int64_t>();
  const float scale = static_cast<float>(guidance_scale);
  const float temp = static_cast<float>(temperature);
  std::vector<float> row(vocab);
  std::vector<int32_t> keys(vocab);
  std::vector<float> weight(vocab);
  std::vector<int64_t> picked(vocab);
  int64_t nan_rows = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* c = lp + i * vocab;
    const float* u = lp + (i + n) * vocab;
    bool nan = false;
    float top = -std::numeric_limits<float>::infinity();  // the row's largest value
    int64_t j = 0;
    {
      const __m256 vs = _mm256_set1_ps(scale), vt = _mm256_set1_ps(temp);
      const __m256i magnitude = _mm256_set1_epi32(0x7FFFFFFF);
      __m256 unordered = _mm256_setzero_ps();
      __m256 highest = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
      for (; j + 8 <= vocab; j += 8) {
        __m256 v = _mm256_loadu_ps(c + j);
        if (guided) {
          const __m256 vu = _mm256_loadu_ps(u + j);
          v = _mm256_add_ps(vu, _mm256_mul_ps(_mm256_sub_ps(v, vu), vs));
        }
        if (temp != 1.0f) v = _mm256_div_ps(v, vt);
        v = _mm256_add_ps(v, _mm256_setzero_ps());  // -0 -> +0: ties at zero compare as floats do
        unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        _mm256_storeu_ps(row.data() + j, v);
        highest = _mm256_max_ps(highest, v);
        const __m256i bits = _mm256_castps_si256(v);  // order_key, branch-free
        const __m256i flip = _mm256_and_si256(_mm256_srai_epi32(bits, 31), magnitude);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(keys.data() + j),
                            _mm256_xor_si256(bits, flip));
      }
      nan = _mm256_movemask_ps(unordered) != 0;
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, highest);
      for (float lane : lanes) top = std::max(top, lane);
    }
    for (; j < vocab; ++j) {
      float v = guided ? u[j] + (c[j] - u[j]) * scale : c[j];
      if (temp != 1.0f) v = v / temp;
      v = v + 0.0f;
      nan |= v != v;
      row[j] = v;
      keys[j] = order_key(v);
      top = std::max(top, v);
    }
    if (nan || top == -std::numeric_limits<float>::infinity()) {  // nothing to weigh
      bad[i] = true;
      ++nan_rows;
      continue;
    }
    const int32_t kth = kth_largest_key(keys.data(), vocab, k);
    double total = 0.0;  // the candidates' exp(v - max), summed in vocabulary order
    int64_t count = 0;
    for (j = 0; j < vocab; ++j) {
      if (keys[j] >= kth) {
        const float w = std::exp(row[j] - top);
        picked[count] = j;
        weight[count++] = w;
        total += w;
      }
    }
    const double target = up[i] * total;
    double running = 0.0;
    int64_t choice = picked[count - 1];  // if rounding leaves the running sum short of target
    for (int64_t p = 0; p < count; ++p) {
      running += weight[p];
      if (running > target) {
        choice = picked[p];
        break;
      }
    }
    out[i] = choice;
  }
  return {ids, broken, nan_rows};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(samplemind, m) {
  m.def(
      "sample_top_k(Tensor logits, float guidance_scale, float temperature, int top_k, "
      "Tensor uniform) -> (Tensor, Tensor, int)");
}

TORCH_LIBRARY_IMPL(samplemind, CPU, m) { m.impl("sample_top_k", &sample_top_k); }
