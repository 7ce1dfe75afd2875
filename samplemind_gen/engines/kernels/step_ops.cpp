// The small ops of MusicGen's decode step on x86 CPUs (built with vnni.cpp into one library by
// samplemind_gen/engines/native_kernels.py): single-query attention, a residual add fused with
// the layer norm after it, and the GELU that int8_linear / int4_linear apply to their outputs.
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
// The loops are written once (attention_body.h, pointwise_body.h) against a small vector type
// (vec.h) and compiled twice: for AVX-512 (16 lanes) and for AVX2 (8 lanes; CPUs with AVX-VNNI
// use it too).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "isa.h"

#include <immintrin.h>

#include <bit>
#include <cstdint>
#include <optional>
#include <tuple>
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
#define SMG_VEC_512
#include "vec.h"
#undef SMG_VEC_512
#include "attention_body.h"
#include "pointwise_body.h"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace avx2 {
#include "vec.h"
#include "attention_body.h"
#include "pointwise_body.h"
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
  if (tasks * length * d < 65536) {  // not through parallel_for: it would still fork and join
    std::vector<float> scratch(length);
    for (int64_t t = 0; t < tasks; ++t) fn(args, t, scratch.data());
    return;
  }
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(length);
    for (int64_t t = begin; t < end; ++t) fn(args, t, scratch.data());
  });
}

at::Tensor finish(const at::Tensor& out, at::ScalarType dtype) {
  if (dtype == at::kFloat) return out;
  // bf16 activations: rounded here, without a dispatched conversion op.
  at::Tensor rounded = at::empty(out.sizes(), out.options().dtype(dtype));
  const float* src = out.data_ptr<float>();
  uint16_t* dst = reinterpret_cast<uint16_t*>(rounded.data_ptr());
  const int64_t n = out.numel();
  if (wide()) avx512::to_bf16(src, dst, n);
  else avx2::to_bf16(src, dst, n);
  return rounded;
}

// x + delta (returned, in x's dtype) and its layer norm: the residual add and the norm after it,
// one op instead of two. fp32 or bf16 activations, fp32 or bf16 weight and bias.
std::tuple<at::Tensor, at::Tensor> add_layer_norm(const at::Tensor& x, const at::Tensor& delta,
                                                  const at::Tensor& weight,
                                                  const at::Tensor& bias, double eps) {
  const int64_t hidden = x.size(-1);
  TORCH_CHECK(x.is_contiguous() && delta.is_contiguous() && x.sizes() == delta.sizes() &&
                  x.scalar_type() == delta.scalar_type(),
              "add_layer_norm: x and delta must be contiguous, of one shape and dtype");
  TORCH_CHECK(hidden % 16 == 0 && weight.numel() == hidden && bias.numel() == hidden &&
                  weight.is_contiguous() && bias.is_contiguous() &&
                  weight.scalar_type() == bias.scalar_type(),
              "add_layer_norm: hidden size a multiple of 16, weight and bias of it");
  const at::ScalarType act = x.scalar_type(), par = weight.scalar_type();
  TORCH_CHECK((act == at::kFloat || act == at::kBFloat16) && (par == at::kFloat || par == at::kBFloat16),
              "add_layer_norm: fp32 or bf16 only");
  at::Tensor sum = at::empty_like(x), normed = at::empty_like(x);
  const int64_t rows = x.numel() / hidden;
  const float e = static_cast<float>(eps);
  auto run = [&]<typename S, typename P>() {
    const S* xp = static_cast<const S*>(x.data_ptr());
    const S* dp = static_cast<const S*>(delta.data_ptr());
    const P* wp = static_cast<const P*>(weight.data_ptr());
    const P* bp = static_cast<const P*>(bias.data_ptr());
    S* sp = static_cast<S*>(sum.data_ptr());
    S* np = static_cast<S*>(normed.data_ptr());
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t o = r * hidden;
      if (wide()) avx512::add_layer_norm_row(xp + o, dp + o, wp, bp, e, hidden, sp + o, np + o);
      else avx2::add_layer_norm_row(xp + o, dp + o, wp, bp, e, hidden, sp + o, np + o);
    }
  };
  if (act == at::kFloat && par == at::kFloat) run.template operator()<float, float>();
  else if (act == at::kFloat) run.template operator()<float, uint16_t>();
  else if (par == at::kFloat) run.template operator()<uint16_t, float>();
  else run.template operator()<uint16_t, uint16_t>();
  return {sum, normed};
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

namespace samplemind_kernels {
at::Tensor packed_linear(int64_t kind, const at::Tensor* t, const at::Tensor& x, bool gelu);
}  // namespace samplemind_kernels

namespace {

// y (fp32 or bf16) as fp32: the folded linears take fp32 activations, so the scores that go
// into the softmax are not rounded to bf16.
at::Tensor as_fp32(const at::Tensor& y) {
  if (y.scalar_type() == at::kFloat) return y;
  TORCH_CHECK(y.scalar_type() == at::kBFloat16 && y.is_contiguous(), "folded_cross: fp32 or bf16");
  at::Tensor out = at::empty(y.sizes(), y.options().dtype(at::kFloat));
  const uint16_t* src = static_cast<const uint16_t*>(y.data_ptr());
  float* dst = out.data_ptr<float>();
  for (int64_t i = 0; i < y.numel(); ++i) dst[i] = std::bit_cast<float>(static_cast<uint32_t>(src[i]) << 16);
  return out;
}

// The rows of `t` (first dimension) that `pick` lists: a view where they are one run, else a copy.
at::Tensor rows_of(const at::Tensor& t, const std::vector<int64_t>& pick) {
  if (pick.back() - pick.front() + 1 == static_cast<int64_t>(pick.size())) {
    return t.narrow(0, pick.front(), static_cast<int64_t>(pick.size()));
  }
  return t.index_select(0, at::tensor(pick, at::kLong)).contiguous();
}

// A cross-attention block (q projection, attention over the prompt, output projection) with
// each row's prompt folded into two small linears where `CachedDecoder._folded_cross` folded
// it. Per row, `groups` (int64) says which: g >= 0, prompt g's A and B (`f + 8 * g`): scores =
// y A^T + c, one per (head, prompt token), each head's softmax over its tokens, then those
// weights times B^T + the output projection's bias; -1, no prompt (guidance's unconditional rows,
// all padding): the output projection's bias, what the attention gives them; -2, the attention
// itself (a prompt too long to fold): the q projection `q` (kind `kq`), `cross_attention` over
// its rows of the prompt's keys and values, the output projection `o` (kind `ko`). Each row is
// computed from its own rows only, so a take comes out the same alone and in a batch. `f`: 4
// tensors for A and for B each, as packed_linear takes them: A int8 (levels, scales, sums, bias)
// or bf16 (weights, -, -, bias), B bf16. Returns (rows, 1, hidden) in y's dtype.
at::Tensor folded_cross(const at::Tensor& y, const at::Tensor* f, int64_t count,
                        const at::Tensor& groups, int64_t heads, int64_t kq, const at::Tensor* q,
                        int64_t ko, const at::Tensor* o, const at::Tensor& keys,
                        const at::Tensor& values, const std::optional<at::Tensor>& mask,
                        double scale) {
  using samplemind_kernels::packed_linear;
  const int64_t rows = groups.numel();
  const int64_t hidden = y.size(-1);
  TORCH_CHECK(groups.scalar_type() == at::kLong && y.numel() == rows * hidden,
              "folded_cross: an int64 group a row");
  const int64_t* g = groups.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(g[r] >= -2 && g[r] < count, "folded_cross: a row's group is -2, -1 or a prompt's");
  }
  const at::Tensor yf = as_fp32(y);
  at::Tensor out = at::empty({rows, 1, hidden}, yf.options());
  float* op = out.data_ptr<float>();
  const at::Tensor& bias = o[3];
  const float* bp = bias.defined() && bias.numel() > 0 ? bias.data_ptr<float>() : nullptr;
  const auto put = [&](const std::vector<int64_t>& pick, const at::Tensor& part) {
    const float* src = part.data_ptr<float>();
    for (size_t i = 0; i < pick.size(); ++i) {
      std::copy(src + i * hidden, src + (i + 1) * hidden, op + pick[i] * hidden);
    }
  };
  std::vector<int64_t> pick;
  for (int64_t k = -2; k < count; ++k) {
    pick.clear();
    for (int64_t r = 0; r < rows; ++r) {
      if (g[r] == k) pick.push_back(r);
    }
    if (pick.empty()) continue;
    if (k == -1) {  // no prompt: the output projection of zeros
      for (const int64_t r : pick) {
        if (bp) std::copy(bp, bp + hidden, op + r * hidden);
        else std::fill(op + r * hidden, op + (r + 1) * hidden, 0.0f);
      }
      continue;
    }
    if (k == -2) {  // the attention over the prompt, on these rows alone (as unfolded)
      const at::Tensor qk = packed_linear(kq, q, rows_of(y, pick), false);
      std::optional<at::Tensor> mk;
      if (mask.has_value() && mask->defined()) mk = mask->numel() == keys.size(2) ? *mask : rows_of(*mask, pick);
      const at::Tensor crossed = cross_attention(qk, rows_of(keys, pick), rows_of(values, pick), mk, scale);
      put(pick, packed_linear(ko, o, crossed, false).to(at::kFloat));
      continue;
    }
    const at::Tensor yk = rows_of(yf, pick);
    const at::Tensor* a = f + 8 * k;
    const bool int8 = a[1].defined() && a[1].numel() > 0;  // A int8 (with scales) or bf16
    at::Tensor scores = packed_linear(int8 ? samplemind_kernels::kLinearInt8 : samplemind_kernels::kLinearHalf,
                                      a, yk, false);
    const int64_t width = scores.size(-1);
    TORCH_CHECK(width % heads == 0, "folded_cross: heads x tokens scores");
    const int64_t tokens = width / heads;
    float* s = scores.data_ptr<float>();
    for (int64_t r = 0; r < static_cast<int64_t>(pick.size()); ++r) {
      for (int64_t h = 0; h < heads; ++h) {
        if (wide()) avx512::softmax_inplace(s + r * width + h * tokens, tokens);
        else avx2::softmax_inplace(s + r * width + h * tokens, tokens);
      }
    }
    put(pick, packed_linear(samplemind_kernels::kLinearHalf, a + 4, scores, false));
  }
  return finish(out, y.scalar_type());
}

// Every decoder layer of one decode step in one call: per layer the same ops, in the same order,
// as CachedDecoder._step_native calls one by one from Python (so the same numbers), without ~11
// Python calls and dispatches a layer (~2-3 us each: ~0.6 ms of a step). Per layer, `kinds` has
// 6 kernel kinds (qkv, out1, cross q, out2, fc1, fc2), `params` 30 tensors (4 per linear as
// `packed_linear` takes them, then the weight and bias of the norm after self-attention, after
// cross-attention and after the feed-forward: the next layer's first norm, or the final one),
// `caches` 6 (keys, values, key scales, value scales, the prompt's keys and values; empty scale
// tensors for caches that are not int8) and `eps` 3. x is the residual stream, y its first norm;
// returns the last layer's (x, y). With `folded` (per layer, 8 tensors for each of its prompts)
// and `groups` (int64, each row's prompt: `folded_cross`), each cross-attention block runs as
// `folded_cross`.
std::tuple<at::Tensor, at::Tensor> decoder_layers(const at::Tensor& x_in, const at::Tensor& y_in,
                                                  at::TensorList params, at::IntArrayRef kinds,
                                                  at::TensorList caches,
                                                  const std::optional<at::Tensor>& cross_mask,
                                                  int64_t position, double scale,
                                                  at::ArrayRef<double> eps, at::TensorList folded,
                                                  const std::optional<at::Tensor>& groups) {
  const int64_t layers = static_cast<int64_t>(kinds.size()) / 6;
  TORCH_CHECK(static_cast<int64_t>(kinds.size()) == 6 * layers &&
                  static_cast<int64_t>(params.size()) == 30 * layers &&
                  static_cast<int64_t>(caches.size()) == 6 * layers &&
                  static_cast<int64_t>(eps.size()) == 3 * layers,
              "decoder_layers: per layer 6 kinds, 30 params, 6 caches and 3 eps");
  const int64_t count = static_cast<int64_t>(folded.size()) / (8 * (layers > 0 ? layers : 1));
  TORCH_CHECK(folded.empty() || (static_cast<int64_t>(folded.size()) == 8 * count * layers &&
                                 groups.has_value() && groups->numel() == x_in.numel() / x_in.size(-1)),
              "decoder_layers: folded cross-attention needs 8 tensors a prompt and layer, a group a row");
  const auto some = [](const at::Tensor& t) {
    return t.defined() && t.numel() > 0 ? std::optional<at::Tensor>(t) : std::nullopt;
  };
  using samplemind_kernels::packed_linear;
  at::Tensor x = x_in, y = y_in;
  for (int64_t l = 0; l < layers; ++l) {
    const at::Tensor* p = params.data() + 30 * l;
    const int64_t* k = kinds.data() + 6 * l;
    const at::Tensor* c = caches.data() + 6 * l;
    at::Tensor keys = c[0], values = c[1];
    const at::Tensor a = self_attention(packed_linear(k[0], p, y, false), keys, values,
                                        some(c[2]), some(c[3]), position, scale);
    std::tie(x, y) = add_layer_norm(x, packed_linear(k[1], p + 4, a, false), p[24], p[25],
                                    eps[3 * l]);
    at::Tensor o2;
    if (!folded.empty()) {  // the prompts' cross-attention as two small linears each
      o2 = folded_cross(y, folded.data() + 8 * count * l, count, *groups, c[4].size(1), k[2],
                        p + 8, k[3], p + 12, c[4], c[5], cross_mask, scale);
    } else {
      const at::Tensor q = packed_linear(k[2], p + 8, y, false);
      o2 = packed_linear(k[3], p + 12, cross_attention(q, c[4], c[5], cross_mask, scale), false);
    }
    std::tie(x, y) = add_layer_norm(x, o2, p[26], p[27], eps[3 * l + 1]);
    const at::Tensor h = packed_linear(k[4], p + 16, y, true);
    std::tie(x, y) = add_layer_norm(x, packed_linear(k[5], p + 20, h, false), p[28], p[29],
                                    eps[3 * l + 2]);
  }
  return {x, y};
}

// The frame's input: for each row, the sum of its codebooks' token embeddings (in the tables'
// dtype, added in codebook order as MusicGen's decoder adds them), plus the sinusoidal position
// `position` (rounded to that dtype), and the first layer's norm of it: (x, y), each (rows, 1,
// hidden). ids (rows * codebooks, 1) int64; one table (vocab, hidden) per codebook. One op
// instead of ~12 small ones (~0.2 ms of a step from Python).
std::tuple<at::Tensor, at::Tensor> embed_frame(const at::Tensor& ids, at::TensorList tables,
                                               const at::Tensor& positions, int64_t position,
                                               const at::Tensor& weight, const at::Tensor& bias,
                                               double eps) {
  const int64_t books = static_cast<int64_t>(tables.size());
  TORCH_CHECK(books > 0 && ids.scalar_type() == at::kLong && ids.numel() % books == 0,
              "embed_frame: ids must be int64, rows x codebooks");
  const at::Tensor idc = ids.contiguous();
  const at::ScalarType act = tables[0].scalar_type();
  const int64_t hidden = tables[0].size(1);
  for (const at::Tensor& t : tables) {
    TORCH_CHECK(t.dim() == 2 && t.is_contiguous() && t.scalar_type() == act && t.size(1) == hidden &&
                    (act == at::kFloat || act == at::kBFloat16),
                "embed_frame: tables must be contiguous fp32 or bf16 (vocab, hidden), alike");
  }
  TORCH_CHECK(positions.dim() == 2 && positions.size(1) == hidden,
              "embed_frame: positions must be (length, hidden)");
  TORCH_CHECK(position >= 0 && position < positions.size(0), "embed_frame: position past the table");
  const int64_t rows = idc.numel() / books;
  const int64_t* id = idc.data_ptr<int64_t>();
  for (int64_t i = 0; i < idc.numel(); ++i) {
    TORCH_CHECK(id[i] >= 0 && id[i] < tables[i % books].size(0), "embed_frame: id out of range");
  }
  at::Tensor summed = at::empty({rows, 1, hidden}, tables[0].options());
  const at::Tensor pos = positions[position].to(act).expand({rows, 1, hidden}).contiguous();
  auto add_rows = [&]<typename S>() {
    S* out = static_cast<S*>(summed.data_ptr());
    for (int64_t r = 0; r < rows; ++r) {
      S* o = out + r * hidden;
      const S* first = static_cast<const S*>(tables[0].data_ptr()) + id[r * books] * hidden;
      std::copy(first, first + hidden, o);
      for (int64_t c = 1; c < books; ++c) {
        const S* e = static_cast<const S*>(tables[c].data_ptr()) + id[r * books + c] * hidden;
        if (wide()) avx512::add_rows(o, e, hidden);
        else avx2::add_rows(o, e, hidden);
      }
    }
  };
  if (act == at::kFloat) add_rows.template operator()<float>();
  else add_rows.template operator()<uint16_t>();
  return add_layer_norm(summed, pos, weight, bias, eps);
}

// The LM heads over the final norm's output y (rows, 1, hidden): logits (rows * heads, vocab),
// row r * heads + c from head c, as `CachedDecoder._head_logits` stacks them. Per head 4 params
// and a kind, as `decoder_layers` takes its linears.
at::Tensor lm_heads(const at::Tensor& y, at::TensorList params, at::IntArrayRef kinds) {
  const int64_t heads = static_cast<int64_t>(kinds.size());
  TORCH_CHECK(heads > 0 && static_cast<int64_t>(params.size()) == 4 * heads,
              "lm_heads: 4 params and a kind per head");
  const int64_t rows = y.numel() / y.size(-1);
  at::Tensor logits;
  for (int64_t c = 0; c < heads; ++c) {
    const at::Tensor one = samplemind_kernels::packed_linear(kinds[c], params.data() + 4 * c, y,
                                                            false).reshape({rows, -1});
    if (c == 0) logits = at::empty({rows, heads, one.size(1)}, one.options());
    logits.select(1, c).copy_(one);
  }
  return logits.view({rows * heads, -1});
}

}  // namespace

namespace samplemind_kernels {
void gelu_inplace(float* y, int64_t n) {
  if (wide()) avx512::gelu_inplace(y, n);
  else avx2::gelu_inplace(y, n);
}
}  // namespace samplemind_kernels

TORCH_LIBRARY_FRAGMENT(samplemind, m) {
  m.def(
      "self_attention(Tensor qkv, Tensor(a!) keys, Tensor(b!) values, Tensor(c!)? key_scales, "
      "Tensor(d!)? value_scales, int position, float scale) -> Tensor");
  m.def("cross_attention(Tensor q, Tensor keys, Tensor values, Tensor? bias, float scale) -> Tensor");
  m.def("add_layer_norm(Tensor x, Tensor delta, Tensor weight, Tensor bias, float eps) -> (Tensor, Tensor)");
  m.def(
      "decoder_layers(Tensor x, Tensor y, Tensor[] params, int[] kinds, Tensor(a!)[] caches, "
      "Tensor? cross_mask, int position, float scale, float[] eps, Tensor[] folded, "
      "Tensor? groups=None) -> (Tensor, Tensor)");
  m.def(
      "embed_frame(Tensor ids, Tensor[] tables, Tensor positions, int position, Tensor weight, "
      "Tensor bias, float eps) -> (Tensor, Tensor)");
  m.def("lm_heads(Tensor y, Tensor[] params, int[] kinds) -> Tensor");
}

TORCH_LIBRARY_IMPL(samplemind, CPU, m) {
  m.impl("self_attention", &self_attention);
  m.impl("cross_attention", &cross_attention);
  m.impl("add_layer_norm", &add_layer_norm);
  m.impl("decoder_layers", &decoder_layers);
  m.impl("embed_frame", &embed_frame);
  m.impl("lm_heads", &lm_heads);
}
