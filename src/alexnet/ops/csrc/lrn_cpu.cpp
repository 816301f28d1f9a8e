// Local response normalisation on the CPU in one pass over the data per direction.
//
// The PyTorch-only path in lrn.py makes about a dozen elementwise passes per call, each reading
// and writing the whole block; here every element of x (and of the gradient) is read once and
// every output written once, and everything in between stays in a small per-thread tile. See
// lrn.py for the formula and for the measured effect.
//
// Two layouts are handled natively, each with its natural tile:
//   channels_last (N, H, W, C): one pixel's C channels are contiguous; the window slides along them.
//   contiguous (N, C, S...):    a tile of TILE spatial positions for every channel; the window
//                               slides across rows and the inner loops run along the positions.
// Any other layout is made contiguous first by the caller. float, bfloat16 and half inputs
// compute in float32 and round once on the way out.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t TILE = 64;
constexpr int64_t PIXEL_TILE = 1024;  // values per channels-last tile: 1024 measured faster than 2048 or 4096

struct Params {
  int64_t size, before, after;
  float alpha, beta, k;
  bool relu;  // ReLU applied on the way in (and its mask on the gradient on the way out)
};

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

// 1/sqrt(x) from the hardware's estimate refined by one Newton step, y (1.5 - 0.5 x y^2):
// 14 (AVX-512) or 12 (AVX2) bits become about 23. Square roots and divisions are the slow
// vector instructions (on Zen 4, each of the three per element cost as much as the rest of
// the forward pass); estimates and multiplies are not.
#if defined(__AVX512F__)
constexpr int64_t LANES = 16;
using vec = __m512;
inline vec load(const float* p) { return _mm512_loadu_ps(p); }
inline void store(float* p, vec v) { _mm512_storeu_ps(p, v); }
inline vec mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
inline vec sub(vec a, vec b) { return _mm512_sub_ps(a, b); }
inline vec all(float x) { return _mm512_set1_ps(x); }
inline vec rsqrt_estimate(vec x) { return _mm512_rsqrt14_ps(x); }
#elif defined(__AVX2__)
constexpr int64_t LANES = 8;
using vec = __m256;
inline vec load(const float* p) { return _mm256_loadu_ps(p); }
inline void store(float* p, vec v) { _mm256_storeu_ps(p, v); }
inline vec mul(vec a, vec b) { return _mm256_mul_ps(a, b); }
inline vec sub(vec a, vec b) { return _mm256_sub_ps(a, b); }
inline vec all(float x) { return _mm256_set1_ps(x); }
inline vec rsqrt_estimate(vec x) { return _mm256_rsqrt_ps(x); }
#else
constexpr int64_t LANES = 0;  // no vector estimate: the exact loops below do all the work
#endif

#if defined(__AVX512F__) || defined(__AVX2__)
inline vec rsqrt(vec x) {  // the estimate y, then one Newton step: y (1.5 - (0.5 x) y^2)
  const vec y = rsqrt_estimate(x);
  const vec t = mul(mul(x, all(0.5f)), mul(y, y));
  return mul(y, sub(all(1.5f), t));
}
#endif

// s = d^-beta and, where sd is given, sd = s / d; one loop per exponent so that each
// vectorises. The paper's 3/4 with r = d^-1/2: s = r^2 / sqrt(r) = r r rsqrt(r), sd = s r r,
// so no square root, no division, and no intermediate above d (d^1.5 would overflow first).
void inverse_power(const float* d, float* s, float* sd, int64_t n, float beta) {
  int64_t vectors_end = 0;  // [0, vectors_end) done by the vector loop, sd included
  if (beta == 0.75f) {
#if defined(__AVX512F__) || defined(__AVX2__)
    for (; vectors_end + LANES <= n; vectors_end += LANES) {
      const vec r = rsqrt(load(d + vectors_end));
      const vec r2 = mul(r, r);
      const vec v = mul(r2, rsqrt(r));
      store(s + vectors_end, v);
      if (sd) store(sd + vectors_end, mul(v, r2));
    }
#endif
    for (int64_t i = vectors_end; i < n; ++i) {  // the same formula, exactly: no d^1.5 either
      const float r = 1.0f / std::sqrt(d[i]);
      s[i] = r * r / std::sqrt(r);
    }
  } else if (beta == 0.5f) {
    for (int64_t i = 0; i < n; ++i) s[i] = 1.0f / std::sqrt(d[i]);
  } else if (beta == 1.0f) {
    for (int64_t i = 0; i < n; ++i) s[i] = 1.0f / d[i];
  } else {
    for (int64_t i = 0; i < n; ++i) s[i] = std::exp(-beta * std::log(d[i]));
  }
  if (sd)
    for (int64_t i = vectors_end; i < n; ++i) sd[i] = s[i] / d[i];
}

// out[j] = k + alpha * sum_{m < size} in[j + m * stride] for j < n. `in` is padded with zeros,
// so the window needs no bounds checks; stride is 1 along a channels-last pixel's channels
// and the tile width across an NCHW tile's rows. With the window size known at compile time
// the sum stays in a register and the loop over j vectorises: one pass instead of the size
// passes of adding shifted copies (measured 1.4x faster forward for conv1 on Zen 4).
template <int SIZE>
void window_fixed(const float* in, float* out, int64_t n, int64_t stride, float k, float alpha) {
  for (int64_t j = 0; j < n; ++j) {
    float acc = in[j];
    for (int m = 1; m < SIZE; ++m) acc += in[j + m * stride];
    out[j] = k + alpha * acc;
  }
}

void window(const float* in, float* out, int64_t n, int64_t stride, int64_t size, float k,
            float alpha) {
  switch (size) {
    case 3: return window_fixed<3>(in, out, n, stride, k, alpha);
    case 5: return window_fixed<5>(in, out, n, stride, k, alpha);
    case 7: return window_fixed<7>(in, out, n, stride, k, alpha);
    default:
      for (int64_t j = 0; j < n; ++j) {
        float acc = in[j];
        for (int64_t m = 1; m < size; ++m) acc += in[j + m * stride];
        out[j] = k + alpha * acc;
      }
  }
}

// bfloat16 to and from float by bit operations that vectorise (c10's conversions are scalar
// here and cost more than the normalisation itself); rounding to nearest even and NaN as
// c10::BFloat16 does them, so the results are the same bits.
inline float to_float(float v) { return v; }
inline float to_float(c10::Half v) { return static_cast<float>(v); }
inline float to_float(c10::BFloat16 v) {
  const uint32_t bits = static_cast<uint32_t>(v.x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

template <typename T>
inline T from_float(float f) {
  return static_cast<T>(f);
}
template <>
inline c10::BFloat16 from_float<c10::BFloat16>(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) rounded = 0x7FC0u;  // NaN
  return c10::BFloat16(static_cast<uint16_t>(rounded), c10::BFloat16::from_bits());
}

// n values of x in float, the ReLU applied where it is fused into the LRN (NaN stays NaN, as
// torch's relu), into xf, and their squares into sq. The ReLU test is taken out of the loop
// and the arrays are marked as not overlapping, so that the loop vectorises on every x86 kind:
// with the test inside, GCC vectorised it only where AVX-512's masked stores exist, and the
// AVX2 build ran it one value at a time (native.compile_flags has the measured effect).
template <typename T>
void values_and_squares(const T* __restrict__ x, float* __restrict__ xf, float* __restrict__ sq,
                        int64_t n, bool relu) {
  if (relu) {
    for (int64_t i = 0; i < n; ++i) {
      const float v = to_float(x[i]);
      const float r = v < 0.0f ? 0.0f : v;
      xf[i] = r;
      sq[i] = r * r;
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float v = to_float(x[i]);
      xf[i] = v;
      sq[i] = v * v;
    }
  }
}

// The input's gradient g s + scale x d (d: the mirrored window sums), zero where the fused
// ReLU was off; the same split of the loop, for the same reason.
template <typename T>
void input_gradient(const float* __restrict__ g, const float* __restrict__ s,
                    const float* __restrict__ xf, const float* __restrict__ d, T* __restrict__ y,
                    int64_t n, float scale, bool relu) {
  if (relu) {
    for (int64_t i = 0; i < n; ++i) {
      const float dx = g[i] * s[i] + scale * xf[i] * d[i];
      y[i] = from_float<T>(xf[i] <= 0.0f ? 0.0f : dx);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = from_float<T>(g[i] * s[i] + scale * xf[i] * d[i]);
  }
}

// Per-thread scratch: x in float, the padded window input, the denominator and the scale.
struct Scratch {
  std::vector<float> xf, pad, pad_t, d, s, sd, g;
  // pad (and, for channels-last, pad_t) hold (channels + size - 1) * w floats, zero-padded.
  Scratch(int64_t channels, int64_t w, int64_t size, bool second_pad = false)
      : xf(channels * w), pad((channels + size - 1) * w, 0.0f),
        pad_t(second_pad ? (channels + size - 1) * w : 0, 0.0f), d(channels * w),
        s(channels * w), sd(channels * w), g(channels * w) {}
};

// One tile: `channels` rows of `w` values each, channel c of position i at c * cs + i.
// Forward writes y; backward (grad != nullptr) writes the input's gradient into y.
template <typename T>
void tile(const T* x, const T* grad, T* y, int64_t channels, int64_t w, int64_t cs,
          const Params& p, Scratch& t) {
  const int64_t n = channels * w;
  float *xf = t.xf.data(), *d = t.d.data(), *s = t.s.data(), *g = t.g.data();
  float* sd = grad ? t.sd.data() : nullptr;  // s / d, which only backward needs
  float* sq = t.pad.data() + p.before * w;  // rows [before, before + channels) of the padding
  for (int64_t c = 0; c < channels; ++c)
    values_and_squares(x + c * cs, xf + c * w, sq + c * w, w, p.relu);
  window(t.pad.data(), d, n, w, p.size, p.k, p.alpha);
  inverse_power(d, s, sd, n, p.beta);
  if (grad == nullptr) {
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t i = 0; i < w; ++i) y[c * cs + i] = from_float<T>(xf[c * w + i] * s[c * w + i]);
    return;
  }
  // dy[c]/dx[j] = s[c] [c == j] - 2 alpha beta x[c] x[j] s[c] / d[c] for j in window(c); the
  // sum over c is a sum over the mirrored window, so t[c] = g x s / d goes in padded by `after`.
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t i = 0; i < w; ++i) g[c * w + i] = to_float(grad[c * cs + i]);
  float* back_in = t.pad.data() + p.after * w;
  if (p.after != p.before) {  // re-zero the rows the shifted copy leaves uncovered
    std::fill(t.pad.begin(), t.pad.begin() + p.after * w, 0.0f);
    std::fill(t.pad.begin() + (p.after + channels) * w, t.pad.end(), 0.0f);
  }
  for (int64_t i = 0; i < n; ++i) back_in[i] = g[i] * xf[i] * sd[i];
  window(t.pad.data(), d, n, w, p.size, 0.0f, 1.0f);  // d now holds the mirrored window sums
  const float scale = -2.0f * p.alpha * p.beta;
  for (int64_t c = 0; c < channels; ++c) {
    const int64_t j = c * w;
    input_gradient(g + j, s + j, xf + j, d + j, y + c * cs, w, scale, p.relu);
  }
  if (p.after != p.before) {  // restore the forward padding for the next tile
    std::fill(t.pad.begin(), t.pad.end(), 0.0f);
  }
}

// Channels-last: `pixels` rows of `channels` contiguous values, the whole run contiguous; the
// window slides along each row. Every pass covers the whole run (not one pixel at a time:
// with 32 or 64 channels a pixel is two to four vectors, and per-pixel loops cost more than
// the arithmetic), and the padded rows keep zero edges of their own, so nothing is cleared
// between runs. `pad` holds the squares, `pad_t` the backward pass's t = g x s / d.
template <typename T>
void pixel_rows(const T* x, const T* grad, T* y, int64_t pixels, int64_t channels,
                const Params& p, Scratch& t) {
  const int64_t n = pixels * channels, row = channels + p.size - 1;
  float *xf = t.xf.data(), *d = t.d.data(), *s = t.s.data(), *g = t.g.data();
  float* sd = grad ? t.sd.data() : nullptr;  // s / d, which only backward needs
  for (int64_t q = 0; q < pixels; ++q) {
    const int64_t j = q * channels;
    values_and_squares(x + j, xf + j, t.pad.data() + q * row + p.before, channels, p.relu);
  }
  for (int64_t q = 0; q < pixels; ++q)
    window(t.pad.data() + q * row, d + q * channels, channels, 1, p.size, p.k, p.alpha);
  inverse_power(d, s, sd, n, p.beta);
  if (grad == nullptr) {
    for (int64_t j = 0; j < n; ++j) y[j] = from_float<T>(xf[j] * s[j]);
    return;
  }
  for (int64_t j = 0; j < n; ++j) g[j] = to_float(grad[j]);
  for (int64_t q = 0; q < pixels; ++q) {
    float* tq = t.pad_t.data() + q * row + p.after;
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t j = q * channels + c;
      tq[c] = g[j] * xf[j] * sd[j];
    }
  }
  for (int64_t q = 0; q < pixels; ++q)  // d now holds the mirrored window sums of t
    window(t.pad_t.data() + q * row, d + q * channels, channels, 1, p.size, 0.0f, 1.0f);
  input_gradient(g, s, xf, d, y, n, -2.0f * p.alpha * p.beta, p.relu);
}

template <typename T>
void run(const at::Tensor& x, const at::Tensor* grad, at::Tensor& y, const Params& p) {
  const T* xp = x.data_ptr<T>();
  const T* gp = grad ? grad->data_ptr<T>() : nullptr;
  T* yp = y.data_ptr<T>();
  const int64_t batch = x.size(0), channels = x.size(1);
  const int64_t spatial = x.numel() / std::max<int64_t>(1, batch * channels);
  if (x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous()) {
    // Channels-last: a tile is a run of pixels, about PIXEL_TILE values in all, so that its
    // seven scratch rows stay in the L2 cache whatever the channel count.
    const int64_t pixels = batch * spatial;
    const int64_t run = std::max<int64_t>(1, PIXEL_TILE / std::max<int64_t>(1, channels));
    at::parallel_for(0, (pixels + run - 1) / run, 1, [&](int64_t begin, int64_t end) {
      Scratch t(channels, run, p.size, /*second_pad=*/true);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t first = b * run, at = first * channels;
        pixel_rows<T>(xp + at, gp ? gp + at : nullptr, yp + at, std::min(run, pixels - first),
                      channels, p, t);
      }
    });
    return;
  }
  // Contiguous (N, C, S): a tile is TILE positions of one sample, channel stride S.
  const int64_t tiles = (spatial + TILE - 1) / TILE;
  at::parallel_for(0, batch * tiles, 1, [&](int64_t begin, int64_t end) {
    Scratch full(channels, TILE, p.size);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t sample = b / tiles, first = (b % tiles) * TILE;
      const int64_t w = std::min(TILE, spatial - first);
      const int64_t at = sample * channels * spatial + first;
      if (w == TILE) {
        tile<T>(xp + at, gp ? gp + at : nullptr, yp + at, channels, w, spatial, p, full);
      } else {
        Scratch part(channels, w, p.size);
        tile<T>(xp + at, gp ? gp + at : nullptr, yp + at, channels, w, spatial, p, part);
      }
    }
  });
}

Params params(int64_t size, double alpha, double beta, double k, bool relu) {
  TORCH_CHECK(size >= 1, "LRN size must be >= 1, got ", size);
  return {size, size / 2, (size - 1) / 2, static_cast<float>(alpha), static_cast<float>(beta),
          static_cast<float>(k), relu};
}

at::Tensor prepare(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu(), "lrn_cpu: expected a CPU tensor");
  TORCH_CHECK(x.dim() >= 3, "lrn_cpu: expected (N, C, ...), got ", x.dim(), " dims");
  if (x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast)) return x;
  return x.contiguous();
}

at::Tensor forward(const at::Tensor& input, int64_t size, double alpha, double beta, double k,
                   bool relu) {
  const at::Tensor x = prepare(input);
  at::Tensor y = at::empty_like(x);
  const Params p = params(size, alpha, beta, k, relu);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "lrn_forward",
                                  [&] { run<scalar_t>(x, nullptr, y, p); });
  return y;
}

at::Tensor backward(const at::Tensor& grad_output, const at::Tensor& input, int64_t size,
                    double alpha, double beta, double k, bool relu) {
  const at::Tensor x = prepare(input);
  // The gradient is read in the input's layout, so both share one indexing.
  const at::Tensor g = grad_output.contiguous(x.suggest_memory_format());
  at::Tensor grad_input = at::empty_like(x);
  const Params p = params(size, alpha, beta, k, relu);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "lrn_backward",
                                  [&] { run<scalar_t>(x, &g, grad_input, p); });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY(alexnet_lrn, m) {
  m.def("forward(Tensor x, int size, float alpha, float beta, float k, bool relu) -> Tensor");
  m.def(
      "backward(Tensor grad, Tensor x, int size, float alpha, float beta, float k, bool relu) "
      "-> Tensor");
}

TORCH_LIBRARY_IMPL(alexnet_lrn, CPU, m) {
  m.impl("forward", forward);
  m.impl("backward", backward);
}
