// Fused GELU (exact and tanh), QuickGELU, SiLU, LayerNorm, LayerScale, RoPE, depthwise
// convolution, attention and the caption loss' softmax, forward and backward, for MindSpore's
// CPU backend (Custom "aot" ops).
//
// MindSpore 2.10 runs exact GELU on CPU as separate Erf/Mul/Add kernels, Erf alone on one core
// at ~16 ns an element (57 ms on a ViT-B/32 block's 32x50x3072 activation, torch: 8.5 ms), and
// its LayerNorm at ~4x torch's time. One pass over the data, vectorised and split over the
// cores, takes ~3 ms for that GELU.
//
// Every function has MindSpore's aot signature; params holds the inputs, then the outputs, all
// float32. Built by mindclip/models/cpu_kernels/__init__.py.
#include <omp.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kParallelFrom = 1 << 15;  // below this, threads cost more than they save

// Threads a parallel region uses: the run's kernel thread count (mindclip_set_threads, from
// context.threads / mindclip.set_num_threads), else OpenMP's default (every core). MindSpore
// calls these functions from its actor threads, more than one at a time; teams larger than
// the cores the user gave the run spin in OpenMP's barriers against each other and against
// the other processes on the machine.
std::atomic<int> g_threads{0};

inline int Threads() {
  const int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}

int64_t Numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

// erf for float32: the rational approximation XLA and Eigen use (a few ulp), written with
// comparisons and arithmetic only so that the loops vectorise; NaN stays NaN.
inline float Erf(float x) {
  x = x < -4.f ? -4.f : x;
  x = x > 4.f ? 4.f : x;
  const float x2 = x * x;
  float p = -2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 + -2.10102402082508e-06f;
  p = p * x2 + -5.69250639462346e-05f;
  p = p * x2 + -7.34990630326855e-04f;
  p = p * x2 + -2.95459980854025e-03f;
  p = p * x2 + -1.60960333262415e-02f;
  float q = -1.45660718464996e-05f;
  q = q * x2 + -2.13374055278905e-04f;
  q = q * x2 + -1.68282697438203e-03f;
  q = q * x2 + -7.37332916720468e-03f;
  q = q * x2 + -1.42647390514189e-02f;
  return x * p / q;
}

// exp for float32 (Cephes' expf: 2^n * P(r), ~1 ulp), vectorisable for the same reason.
inline float Exp(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.7f ? 88.7f : x;
  // Round x/ln2 to the nearest integer by adding and removing 1.5 * 2^23.
  const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// Mean and 1/sqrt(biased variance + eps) of one row: two passes, summed in double (rows with
// a large common offset lose digits in float sums).
inline void RowMoments(const float *x, int64_t width, float eps, float *mean, float *rstd) {
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < width; ++i) sum += x[i];
  const double m = sum / width;
  double sq = 0.0;
#pragma omp simd reduction(+ : sq)
  for (int64_t i = 0; i < width; ++i) sq += (x[i] - m) * (x[i] - m);
  *mean = static_cast<float>(m);
  *rstd = static_cast<float>(1.0 / std::sqrt(sq / width + eps));
}

constexpr float kSqrtHalf = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;
constexpr float kQuick = 1.702f;

// y[i] = f(x[i]); params: x, y.
template <typename F>
int Map(void **params, int *ndims, int64_t **shapes, F f) {
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int64_t n = Numel(ndims[0], shapes[0]);
#pragma omp parallel for simd schedule(static) if (n >= kParallelFrom) num_threads(Threads())
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
  return 0;
}

// dx[i] = dy[i] * f'(x[i]); params: x, dy, dx.
template <typename F>
int MapGrad(void **params, int *ndims, int64_t **shapes, F derivative) {
  const float *x = static_cast<const float *>(params[0]);
  const float *dy = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  const int64_t n = Numel(ndims[0], shapes[0]);
#pragma omp parallel for simd schedule(static) if (n >= kParallelFrom) num_threads(Threads())
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * derivative(x[i]);
  return 0;
}

}  // namespace

// The kernels' thread count (0: OpenMP's default); mindclip/models/cpu_kernels sets it.
extern "C" void mindclip_set_threads(int n) { g_threads.store(n > 0 ? n : 0); }

// The size of the team a kernel's parallel region starts now.
extern "C" int mindclip_team_size() {
  int size = 1;
#pragma omp parallel num_threads(Threads())
  {
#pragma omp single
    size = omp_get_num_threads();
  }
  return size;
}

#define MINDCLIP_AOT(name) \
  extern "C" int name(int nparam, void **params, int *ndims, int64_t **shapes, \
                      const char **dtypes, void *stream, void *extra)

// y = x/2 * (1 + erf(x/sqrt(2)))
MINDCLIP_AOT(GeluForward) {
  return Map(params, ndims, shapes, [](float v) { return 0.5f * v * (1.f + Erf(v * kSqrtHalf)); });
}

// y' = Phi(x) + x * phi(x)
MINDCLIP_AOT(GeluBackward) {
  return MapGrad(params, ndims, shapes, [](float v) {
    return 0.5f * (1.f + Erf(v * kSqrtHalf)) + v * kInvSqrt2Pi * Exp(-0.5f * v * v);
  });
}

// y = x * sigmoid(1.702 x)
MINDCLIP_AOT(QuickGeluForward) {
  return Map(params, ndims, shapes, [](float v) { return v / (1.f + Exp(-kQuick * v)); });
}

// y' = s + 1.702 x s (1 - s), s = sigmoid(1.702 x)
MINDCLIP_AOT(QuickGeluBackward) {
  return MapGrad(params, ndims, shapes, [](float v) {
    const float s = 1.f / (1.f + Exp(-kQuick * v));
    return s + kQuick * v * s * (1.f - s);
  });
}

// LayerNorm over the last axis: y = (x - mean) / sqrt(var + eps) * gamma + beta, with the
// biased variance (PyTorch's). Inputs x (rows x width), gamma, beta, eps (one element).
MINDCLIP_AOT(LayerNormForward) {
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  const float *beta = static_cast<const float *>(params[2]);
  const float eps = *static_cast<const float *>(params[3]);
  float *y = static_cast<float *>(params[4]);
  const int64_t width = shapes[0][ndims[0] - 1];
  const int64_t rows = Numel(ndims[0], shapes[0]) / width;
#pragma omp parallel for schedule(static) if (rows * width >= kParallelFrom) num_threads(Threads())
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = x + r * width;
    float *yr = y + r * width;
    float mean, rstd;
    RowMoments(xr, width, eps, &mean, &rstd);
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) yr[i] = (xr[i] - mean) * rstd * gamma[i] + beta[i];
  }
  return 0;
}

// Inputs x, gamma, dy, eps; outputs dx, dgamma, dbeta. The row statistics are recomputed
// rather than kept from the forward pass.
MINDCLIP_AOT(LayerNormBackward) {
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  const float *dy = static_cast<const float *>(params[2]);
  const float eps = *static_cast<const float *>(params[3]);
  float *dx = static_cast<float *>(params[4]);
  float *dgamma = static_cast<float *>(params[5]);
  float *dbeta = static_cast<float *>(params[6]);
  const int64_t width = shapes[0][ndims[0] - 1];
  const int64_t rows = Numel(ndims[0], shapes[0]) / width;
  std::vector<double> total_g(width, 0.0), total_b(width, 0.0);
#pragma omp parallel if (rows * width >= kParallelFrom) num_threads(Threads())
  {
    // Per-thread partial sums of dgamma/dbeta in double: summed over up to ~10^5 rows.
    std::vector<double> part_g(width, 0.0), part_b(width, 0.0);
    std::vector<float> xhat(width);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float *xr = x + r * width;
      const float *dyr = dy + r * width;
      float *dxr = dx + r * width;
      float mean, rstd;
      RowMoments(xr, width, eps, &mean, &rstd);
      float sum_g = 0.f, sum_gx = 0.f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
      for (int64_t i = 0; i < width; ++i) {
        xhat[i] = (xr[i] - mean) * rstd;
        const float g = dyr[i] * gamma[i];
        sum_g += g;
        sum_gx += g * xhat[i];
      }
      const float mean_g = sum_g / width, mean_gx = sum_gx / width;
#pragma omp simd
      for (int64_t i = 0; i < width; ++i) {
        dxr[i] = rstd * (dyr[i] * gamma[i] - mean_g - xhat[i] * mean_gx);
        part_g[i] += static_cast<double>(dyr[i]) * xhat[i];
        part_b[i] += dyr[i];
      }
    }
#pragma omp critical
    for (int64_t i = 0; i < width; ++i) {
      total_g[i] += part_g[i];
      total_b[i] += part_b[i];
    }
  }
  for (int64_t i = 0; i < width; ++i) {
    dgamma[i] = static_cast<float>(total_g[i]);
    dbeta[i] = static_cast<float>(total_b[i]);
  }
  return 0;
}

// GELU's tanh approximation as x * sigmoid(2 z), z = sqrt(2/pi) (x + 0.044715 x^3)
constexpr float kTwoSqrt2OverPi = 1.5957691216057308f;

// y = x * sigmoid(2 z)
MINDCLIP_AOT(GeluTanhForward) {
  return Map(params, ndims, shapes, [](float v) {
    return v / (1.f + Exp(-kTwoSqrt2OverPi * (v + 0.044715f * v * v * v)));
  });
}

// y' = s + x s (1 - s) 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2), s = sigmoid(2 z)
MINDCLIP_AOT(GeluTanhBackward) {
  return MapGrad(params, ndims, shapes, [](float v) {
    const float s = 1.f / (1.f + Exp(-kTwoSqrt2OverPi * (v + 0.044715f * v * v * v)));
    return s + v * s * (1.f - s) * kTwoSqrt2OverPi * (1.f + 0.134145f * v * v);
  });
}

// y = x * sigmoid(x) (SiLU, SwiGLU's gate)
MINDCLIP_AOT(SiluForward) {
  return Map(params, ndims, shapes, [](float v) { return v / (1.f + Exp(-v)); });
}

// y' = s + x s (1 - s), s = sigmoid(x)
MINDCLIP_AOT(SiluBackward) {
  return MapGrad(params, ndims, shapes, [](float v) {
    const float s = 1.f / (1.f + Exp(-v));
    return s + v * s * (1.f - s);
  });
}

namespace {

// 2-D rotary embedding in timm's interleaved layout, one pass: for row r of x (..., N, D) and
// tables of T rows ((N, D) shared by every sample, or (B, N, D): each sample's kept patches
// under patch dropout), t = r mod T, y[j] = x[j] * c[t, j] + x[j ^ 1] * s[t, k(j)], where the sign of timm's
// rot() is in s and k(j) = j (forward) or j ^ 1 (backward: the transpose of the pair swap).
// MindSpore's reshape + flip for the swap ran at ~1 GB/s: a quarter of an EVA02 forward.
int Rope(void **params, int *ndims, int64_t **shapes, bool transpose) {
  const float *x = static_cast<const float *>(params[0]);
  const float *c = static_cast<const float *>(params[1]);
  const float *s = static_cast<const float *>(params[2]);
  float *y = static_cast<float *>(params[3]);
  const int64_t width = shapes[1][ndims[1] - 1];
  const int64_t tokens = Numel(ndims[1], shapes[1]) / width;
  const int64_t rows = Numel(ndims[0], shapes[0]) / width;
#pragma omp parallel for schedule(static) if (rows * width >= kParallelFrom) num_threads(Threads())
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = x + r * width;
    const float *cr = c + (r % tokens) * width;
    const float *sr = s + (r % tokens) * width;
    float *yr = y + r * width;
    if (transpose) {
#pragma omp simd
      for (int64_t j = 0; j < width; j += 2) {
        yr[j] = xr[j] * cr[j] + xr[j + 1] * sr[j + 1];
        yr[j + 1] = xr[j + 1] * cr[j + 1] + xr[j] * sr[j];
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < width; j += 2) {
        yr[j] = xr[j] * cr[j] + xr[j + 1] * sr[j];
        yr[j + 1] = xr[j + 1] * cr[j + 1] + xr[j] * sr[j + 1];
      }
    }
  }
  return 0;
}

}  // namespace

// params: x (..., N, D), cos (N, D) or (B, N, D), signed sin (as cos), y
MINDCLIP_AOT(RopeForward) { return Rope(params, ndims, shapes, false); }

// params: dy, cos, signed sin, dx
MINDCLIP_AOT(RopeBackward) { return Rope(params, ndims, shapes, true); }

namespace {

// Depthwise k x k convolution, stride 1, zero padding k / 2, on channels-last maps: the
// 7x7 of ConvNeXt's blocks. x (B, H, W, C), w (k * k, C) (tap-major, so that the inner loop
// runs over contiguous channels), y (B, H, W, C). MindSpore's CPU depthwise Conv2d wants
// channels-first maps, and its 4-D transposes there cost as much as the convolution.
struct DwShape {
  int64_t b, h, w, c, k, p;
};

DwShape DwShapeOf(int *ndims, int64_t **shapes) {
  DwShape s;
  s.b = shapes[0][0];
  s.h = shapes[0][1];
  s.w = shapes[0][2];
  s.c = shapes[0][3];
  const int64_t taps = shapes[1][0];
  s.k = 1;
  while (s.k * s.k < taps) ++s.k;
  s.p = s.k / 2;
  (void)ndims;
  return s;
}

// out[b, y, x] = bias + sum over taps (i, j) of in[b, y + sign * (i - p), x + sign * (j - p)]
// * w[tap]: the forward pass (sign 1) and the input gradient (sign -1, the transposed
// convolution, no bias). Output pixels are summed over the taps in registers, kBlock channels
// of kTile neighbouring pixels at a time (each tap's weights loaded once for the tile), and
// stored once: summing tap by tap into memory made it memory-bound at ~4 GFLOP/s.
constexpr int64_t kBlock = 32;
constexpr int64_t kTile = 4;
constexpr int64_t kDwChunks = 16;  // row chunks of the weight gradient's fixed-order sum

// pixels x .. x + T - 1 of row (b, y), channels c0 .. c0 + n - 1 (n <= kBlock); ``inside``:
// every tap of every pixel of the tile lies within the row, so x needs no bounds checks
template <int64_t T, bool kFull>
inline void DwTile(const float *in, const float *w, const float *bias, float *out, const DwShape &s,
                   int sign, int64_t b, int64_t y, int64_t x, int64_t c0, int64_t n, bool inside) {
  float acc[T][kBlock];
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < kBlock; ++c) acc[t][c] = bias ? bias[c0 + (c < n ? c : 0)] : 0.f;
  for (int64_t i = 0; i < s.k; ++i) {
    const int64_t yy = y + sign * (i - s.p);
    if (yy < 0 || yy >= s.h) continue;
    const float *irow = in + (b * s.h + yy) * s.w * s.c + c0;
    for (int64_t j = 0; j < s.k; ++j) {
      const float *wt = w + (i * s.k + j) * s.c + c0;
      const int64_t dx = sign * (j - s.p);
      for (int64_t t = 0; t < T; ++t) {
        const int64_t xx = x + t + dx;
        if (!inside && (xx < 0 || xx >= s.w)) continue;
        const float *src = irow + xx * s.c;
        if (kFull) {
#pragma omp simd
          for (int64_t c = 0; c < kBlock; ++c) acc[t][c] += src[c] * wt[c];
        } else {
          for (int64_t c = 0; c < n; ++c) acc[t][c] += src[c] * wt[c];
        }
      }
    }
  }
  for (int64_t t = 0; t < T; ++t) {
    float *dst = out + ((b * s.h + y) * s.w + x + t) * s.c + c0;
    for (int64_t c = 0; c < n; ++c) dst[c] = acc[t][c];
  }
}

template <bool kFull>
void DwRow(const float *in, const float *w, const float *bias, float *out, const DwShape &s,
           int sign, int64_t b, int64_t y, int64_t c0, int64_t n) {
  int64_t x = 0;
  for (; x < s.p && x < s.w; ++x) DwTile<1, kFull>(in, w, bias, out, s, sign, b, y, x, c0, n, false);
  for (; x + kTile <= s.w - s.p; x += kTile)
    DwTile<kTile, kFull>(in, w, bias, out, s, sign, b, y, x, c0, n, true);
  for (; x < s.w; ++x) DwTile<1, kFull>(in, w, bias, out, s, sign, b, y, x, c0, n, false);
}

void DwCorrelate(const float *in, const float *w, const float *bias, float *out, const DwShape &s,
                 int sign) {
  const int64_t rows = s.b * s.h;
#pragma omp parallel for schedule(static) if (rows * s.w * s.c >= kParallelFrom) num_threads(Threads())
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / s.h, y = r % s.h;
    int64_t c0 = 0;
    for (; c0 + kBlock <= s.c; c0 += kBlock) DwRow<true>(in, w, bias, out, s, sign, b, y, c0, kBlock);
    if (c0 < s.c) DwRow<false>(in, w, bias, out, s, sign, b, y, c0, s.c - c0);
  }
}

}  // namespace

// params: x (B, H, W, C), w (k * k, C), bias (C), y
MINDCLIP_AOT(DepthwiseForward) {
  const DwShape s = DwShapeOf(ndims, shapes);
  DwCorrelate(static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
              static_cast<const float *>(params[2]), static_cast<float *>(params[3]), s, 1);
  return 0;
}

// params: x, w, bias, dy, dx (as x), dw (as w), dbias (as bias)
MINDCLIP_AOT(DepthwiseBackward) {
  const DwShape s = DwShapeOf(ndims, shapes);
  const float *x = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  const float *dy = static_cast<const float *>(params[3]);
  float *dx = static_cast<float *>(params[4]);
  float *dw = static_cast<float *>(params[5]);
  float *db = static_cast<float *>(params[6]);
  DwCorrelate(dy, w, nullptr, dx, s, -1);
  std::memset(db, 0, sizeof(float) * s.c);
  for (int64_t r = 0; r < s.b * s.h * s.w; ++r) {
    const float *g = dy + r * s.c;
#pragma omp simd
    for (int64_t c = 0; c < s.c; ++c) db[c] += g[c];
  }
  // dw[tap] = sum over b, y, x of x[b, y + i - p, x + j - p] * dy[b, y, x]: the rows split into
  // a fixed number of chunks, each summed into its own copy of dw, the copies added in chunk
  // order, so that the gradient does not depend on the threads (a resumed run repeats its
  // steps bit for bit)
  const int64_t taps = s.k * s.k, rows = s.b * s.h;
  const int64_t chunks = rows < kDwChunks ? rows : kDwChunks;
  std::vector<float> partial(chunks * taps * s.c, 0.f);
#pragma omp parallel for schedule(static) if (rows * s.w * s.c >= kParallelFrom) num_threads(Threads())
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    float *acc = partial.data() + chunk * taps * s.c;
    for (int64_t r = chunk * rows / chunks; r < (chunk + 1) * rows / chunks; ++r) {
      const int64_t b = r / s.h, y = r % s.h;
      const float *grow = dy + r * s.w * s.c;
      for (int64_t i = 0; i < s.k; ++i) {
        const int64_t yy = y + i - s.p;
        if (yy < 0 || yy >= s.h) continue;
        const float *irow = x + (b * s.h + yy) * s.w * s.c;
        for (int64_t j = 0; j < s.k; ++j) {
          float *a = acc + (i * s.k + j) * s.c;
          const int64_t dx_ = j - s.p;
          const int64_t x0 = dx_ < 0 ? -dx_ : 0, x1 = dx_ > 0 ? s.w - dx_ : s.w;
          for (int64_t xx = x0; xx < x1; ++xx) {
            const float *src = irow + (xx + dx_) * s.c;
            const float *g = grow + xx * s.c;
#pragma omp simd
            for (int64_t c = 0; c < s.c; ++c) a[c] += src[c] * g[c];
          }
        }
      }
    }
  }
  std::memset(dw, 0, sizeof(float) * taps * s.c);
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const float *acc = partial.data() + chunk * taps * s.c;
#pragma omp simd
    for (int64_t t = 0; t < taps * s.c; ++t) dw[t] += acc[t];
  }
  return 0;
}

namespace {

// Multi-head attention, softmax(q k^T * scale + mask) v, on (B, L, D) queries and (B, S, D)
// keys and values whose heads are column blocks of width D / H: what PerHeadAttention runs
// as a dozen MindSpore kernels per head. Its backward recomputes the probabilities from q
// and k (as flash attention does) and writes dq, dk, dv straight into their columns:
// MindSpore's CPU runtime did not reuse the memory of the per-head slices, products and
// concatenations of the op-by-op backward, ~10 activations' worth per block.
//
// The mask is none (0-d), (L, S), (B, L, S) or (B or 1, 1, S), added to every head's scores;
// or, with head_bias, a learned (H, L, S) bias, one per head, whose gradient is the sum of the
// score gradients over the batch. meta holds heads, scale and head_bias (float32).
struct Attn {
  int64_t b, l, s, d, h, hd, sp;  // sp: s rounded up to whole tiles (a row of P, a packed key)
  float scale;
  bool head_bias;
  const float *mask;
  int64_t mask_b, mask_h, mask_row;  // strides (0: broadcast)
};

// A product tile: kRows x kLanes sums held in registers (12 of AVX-512's 32, 12 of AVX2's 16)
#ifdef __AVX512F__
constexpr int64_t kLanes = 32;
#else
constexpr int64_t kLanes = 16;
#endif
constexpr int64_t kRows = 6;

// exp(x - max x) of one row into out; returns their sum, *top the row's max
inline float RowExps(const float *x, int64_t n, float *out, float *top) {
  float m = x[0];
  for (int64_t j = 1; j < n; ++j) m = x[j] > m ? x[j] : m;
  float total = 0.f;
#pragma omp simd reduction(+ : total)
  for (int64_t j = 0; j < n; ++j) {
    out[j] = Exp(x[j] - m);
    total += out[j];
  }
  *top = m;
  return total;
}

Attn AttnOf(void **params, int *ndims, int64_t **shapes) {
  Attn a;
  a.b = shapes[0][0];
  a.l = shapes[0][1];
  a.d = shapes[0][2];
  a.s = shapes[1][1];
  const float *meta = static_cast<const float *>(params[4]);
  a.h = static_cast<int64_t>(meta[0]);
  a.scale = meta[1];
  a.head_bias = meta[2] != 0.f;
  a.hd = a.d / a.h;
  a.sp = (a.s + kLanes - 1) / kLanes * kLanes;
  const int mdim = ndims[3];
  const int64_t *ms = shapes[3];
  a.mask = mdim == 0 ? nullptr : static_cast<const float *>(params[3]);
  a.mask_b = a.mask_h = 0;
  a.mask_row = mdim >= 2 && ms[mdim - 2] != 1 ? a.s : 0;
  if (mdim == 3 && a.head_bias) a.mask_h = ms[1] * a.s;
  if (mdim == 3 && !a.head_bias && ms[0] != 1) a.mask_b = ms[1] * a.s;
  return a;
}

// One tile of C = alpha * A B: R rows, n <= kLanes columns, summed
// over k in registers. A[r][x] = a[r * ars + x * aks], B[x][c] = bm[x * bks + c],
// C[r][c] = cm[r * crs + c]. Every product of the attention is this with other strides.
template <int R, bool kFull>
inline void Tile(const float *a, int64_t ars, int64_t aks, const float *bm, int64_t bks, int64_t k,
                 float *cm, int64_t crs, int64_t n, float alpha) {
  float acc[R][kLanes] = {};
  for (int64_t x = 0; x < k; ++x) {
    const float *brow = bm + x * bks;
    for (int r = 0; r < R; ++r) {
      const float av = a[r * ars + x * aks];
      if (kFull) {
#pragma omp simd
        for (int64_t c = 0; c < kLanes; ++c) acc[r][c] += av * brow[c];
      } else {
        for (int64_t c = 0; c < n; ++c) acc[r][c] += av * brow[c];
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    float *crow = cm + r * crs;
    for (int64_t c = 0; c < n; ++c) crow[c] = alpha * acc[r][c];
  }
}

// C (m x n) = alpha * A (m x k) B (k x n), tile by tile
void Product(const float *a, int64_t ars, int64_t aks, const float *bm, int64_t bks, int64_t m,
             int64_t k, int64_t n, float *cm, int64_t crs, float alpha) {
  for (int64_t c0 = 0; c0 < n; c0 += kLanes) {
    const int64_t w = n - c0 < kLanes ? n - c0 : kLanes;
    int64_t r0 = 0;
    for (; r0 + kRows <= m; r0 += kRows) {
      if (w == kLanes)
        Tile<kRows, true>(a + r0 * ars, ars, aks, bm + c0, bks, k, cm + r0 * crs + c0, crs, w, alpha);
      else
        Tile<kRows, false>(a + r0 * ars, ars, aks, bm + c0, bks, k, cm + r0 * crs + c0, crs, w, alpha);
    }
    for (; r0 < m; ++r0) {
      if (w == kLanes)
        Tile<1, true>(a + r0 * ars, ars, aks, bm + c0, bks, k, cm + r0 * crs + c0, crs, w, alpha);
      else
        Tile<1, false>(a + r0 * ars, ars, aks, bm + c0, bks, k, cm + r0 * crs + c0, crs, w, alpha);
    }
  }
}

// packed[c * sp + j] = x[b, j, h * hd + c]: one head's keys (or values) as columns, zero-padded
void PackHead(const Attn &a, const float *x, int64_t b, int64_t h, float *packed) {
  for (int64_t c = 0; c < a.hd; ++c) {
    float *dst = packed + c * a.sp;
    const float *src = x + b * a.s * a.d + h * a.hd + c;
    for (int64_t j = 0; j < a.s; ++j) dst[j] = src[j * a.d];
    for (int64_t j = a.s; j < a.sp; ++j) dst[j] = 0.f;
  }
}

// p (L x sp): the probabilities of sample b, head h (columns from s on are zero)
void Probabilities(const Attn &a, const float *q, const float *kt, int64_t b, int64_t h, float *p) {
  Product(q + b * a.l * a.d + h * a.hd, a.d, 1, kt, a.sp, a.l, a.hd, a.sp, p, a.sp, a.scale);
  for (int64_t i = 0; i < a.l; ++i) {
    float *row = p + i * a.sp;
    if (a.mask) {
      const float *m = a.mask + b * a.mask_b + h * a.mask_h + i * a.mask_row;
#pragma omp simd
      for (int64_t j = 0; j < a.s; ++j) row[j] += m[j];
    }
    float top;
    const float inv = 1.f / RowExps(row, a.s, row, &top);
#pragma omp simd
    for (int64_t j = 0; j < a.s; ++j) row[j] *= inv;
    for (int64_t j = a.s; j < a.sp; ++j) row[j] = 0.f;
  }
}

}  // namespace

// params: q (B, L, D), k (B, S, D), v (B, S, D), mask, meta (3), out (as q)
MINDCLIP_AOT(AttentionForward) {
  const Attn a = AttnOf(params, ndims, shapes);
  const float *q = static_cast<const float *>(params[0]);
  const float *k = static_cast<const float *>(params[1]);
  const float *v = static_cast<const float *>(params[2]);
  float *out = static_cast<float *>(params[5]);
#pragma omp parallel num_threads(Threads())
  {
    std::vector<float> kt(a.hd * a.sp), p(a.l * a.sp);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < a.b; ++b)
      for (int64_t h = 0; h < a.h; ++h) {
        PackHead(a, k, b, h, kt.data());
        Probabilities(a, q, kt.data(), b, h, p.data());
        const int64_t col = b * a.s * a.d + h * a.hd;
        Product(p.data(), a.sp, 1, v + col, a.d, a.l, a.s, a.hd, out + b * a.l * a.d + h * a.hd,
                a.d, 1.f);
      }
  }
  return 0;
}

// params: q, k, v, mask, meta, dout (as q); outputs dq, dk, dv, dmask (as mask: the head
// bias' gradient, else zeros). Heads run in parallel, each over the samples in order, so the
// bias gradient's sums do not depend on the threads.
MINDCLIP_AOT(AttentionBackward) {
  const Attn a = AttnOf(params, ndims, shapes);
  const float *q = static_cast<const float *>(params[0]);
  const float *k = static_cast<const float *>(params[1]);
  const float *v = static_cast<const float *>(params[2]);
  const float *dout = static_cast<const float *>(params[5]);
  float *dq = static_cast<float *>(params[6]);
  float *dk = static_cast<float *>(params[7]);
  float *dv = static_cast<float *>(params[8]);
  float *dmask = static_cast<float *>(params[9]);
  std::memset(dmask, 0, sizeof(float) * Numel(ndims[3], shapes[3]));
#pragma omp parallel num_threads(Threads())
  {
    std::vector<float> kt(a.hd * a.sp), vt(a.hd * a.sp), p(a.l * a.sp), dz(a.l * a.sp);
#pragma omp for schedule(static)
    for (int64_t h = 0; h < a.h; ++h)
      for (int64_t b = 0; b < a.b; ++b) {
        PackHead(a, k, b, h, kt.data());
        PackHead(a, v, b, h, vt.data());
        Probabilities(a, q, kt.data(), b, h, p.data());
        const int64_t qcol = b * a.l * a.d + h * a.hd, kcol = b * a.s * a.d + h * a.hd;
        // dp = dout v^T, then dz = p * (dp - rowsum(dp * p)): the scores' gradient
        Product(dout + qcol, a.d, 1, vt.data(), a.sp, a.l, a.hd, a.sp, dz.data(), a.sp, 1.f);
        for (int64_t i = 0; i < a.l; ++i) {
          float *z = dz.data() + i * a.sp;
          const float *pr = p.data() + i * a.sp;
          float dot = 0.f;
#pragma omp simd reduction(+ : dot)
          for (int64_t j = 0; j < a.s; ++j) dot += z[j] * pr[j];
#pragma omp simd
          for (int64_t j = 0; j < a.sp; ++j) z[j] = pr[j] * (z[j] - dot);
          if (a.head_bias) {
            float *g = dmask + h * a.mask_h + i * a.mask_row;
#pragma omp simd
            for (int64_t j = 0; j < a.s; ++j) g[j] += z[j];
          }
        }
        // dq = dz k * scale, dk = dz^T q * scale, dv = p^T dout
        Product(dz.data(), a.sp, 1, k + kcol, a.d, a.l, a.s, a.hd, dq + qcol, a.d, a.scale);
        Product(dz.data(), 1, a.sp, q + qcol, a.d, a.s, a.l, a.hd, dk + kcol, a.d, a.scale);
        Product(p.data(), 1, a.sp, dout + qcol, a.d, a.s, a.l, a.hd, dv + kcol, a.d, 1.f);
      }
  }
  return 0;
}

// Next-token negative log-likelihood of rows of vocabulary logits: the caption loss after
// its projection (mindclip/families/coca_objective.py). MindSpore's CPU kernels of the
// broadcasting ops it was written with (logits - row max, softmax * row scale) each held
// ~4 logits-sized buffers until the step ended (2 GB apiece for CoCa's 2432 x 49408 logits).
// Labels arrive as float32 (token ids are exact below 2^24).
// params: logits (R, V), labels (R, 1), keep (R, 1); out: nll * keep (R, 1)
MINDCLIP_AOT(CaptionNLLForward) {
  const float *logits = static_cast<const float *>(params[0]);
  const float *labels = static_cast<const float *>(params[1]);
  const float *keep = static_cast<const float *>(params[2]);
  float *nll = static_cast<float *>(params[3]);
  const int64_t vocab = shapes[0][ndims[0] - 1];
  const int64_t rows = Numel(ndims[0], shapes[0]) / vocab;
#pragma omp parallel num_threads(Threads())
  {
    std::vector<float> work(vocab);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float *x = logits + r * vocab;
      float top;
      const float total = RowExps(x, vocab, work.data(), &top);
      nll[r] = (top + std::log(total) - x[static_cast<int64_t>(labels[r])]) * keep[r];
    }
  }
  return 0;
}

// params: logits (R, V), labels (R, 1), scale (R, 1); out: (softmax - one_hot) * scale (R, V)
MINDCLIP_AOT(CaptionNLLBackward) {
  const float *logits = static_cast<const float *>(params[0]);
  const float *labels = static_cast<const float *>(params[1]);
  const float *scale = static_cast<const float *>(params[2]);
  float *grad = static_cast<float *>(params[3]);
  const int64_t vocab = shapes[0][ndims[0] - 1];
  const int64_t rows = Numel(ndims[0], shapes[0]) / vocab;
#pragma omp parallel for schedule(static) num_threads(Threads())
  for (int64_t r = 0; r < rows; ++r) {
    float *g = grad + r * vocab;
    float top;
    const float s = scale[r] / RowExps(logits + r * vocab, vocab, g, &top);
#pragma omp simd
    for (int64_t j = 0; j < vocab; ++j) g[j] *= s;
    g[static_cast<int64_t>(labels[r])] -= scale[r];
  }
  return 0;
}

// x * gamma over the last axis (LayerScale). MindSpore's broadcasting CPU Mul held ~8
// activations' worth per LayerScale until the step ended.
// params: x (..., C), gamma (C); y (as x)
MINDCLIP_AOT(ScaleChannelsForward) {
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  const int64_t width = shapes[1][0];
  const int64_t rows = Numel(ndims[0], shapes[0]) / width;
#pragma omp parallel for schedule(static) if (rows * width >= kParallelFrom) num_threads(Threads())
  for (int64_t r = 0; r < rows; ++r) {
#pragma omp simd
    for (int64_t c = 0; c < width; ++c) y[r * width + c] = x[r * width + c] * gamma[c];
  }
  return 0;
}

// params: x, gamma, dy; dx (as x), dgamma (as gamma) = sum over rows of dy * x, summed in a
// fixed number of row chunks added in order (the same bits whatever the threads)
MINDCLIP_AOT(ScaleChannelsBackward) {
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  const float *dy = static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[3]);
  float *dgamma = static_cast<float *>(params[4]);
  const int64_t width = shapes[1][0];
  const int64_t rows = Numel(ndims[0], shapes[0]) / width;
  const int64_t chunks = rows < kDwChunks ? (rows > 0 ? rows : 1) : kDwChunks;
  std::vector<float> partial(chunks * width, 0.f);
#pragma omp parallel for schedule(static) if (rows * width >= kParallelFrom) num_threads(Threads())
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    float *acc = partial.data() + chunk * width;
    for (int64_t r = chunk * rows / chunks; r < (chunk + 1) * rows / chunks; ++r) {
      const float *xr = x + r * width, *g = dy + r * width;
      float *dxr = dx + r * width;
#pragma omp simd
      for (int64_t c = 0; c < width; ++c) {
        dxr[c] = g[c] * gamma[c];
        acc[c] += g[c] * xr[c];
      }
    }
  }
  for (int64_t c = 0; c < width; ++c) dgamma[c] = 0.f;
  for (int64_t chunk = 0; chunk < chunks; ++chunk)
    for (int64_t c = 0; c < width; ++c) dgamma[c] += partial[chunk * width + c];
  return 0;
}
