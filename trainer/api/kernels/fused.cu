// Fused training kernels of agentloop-trainer (see src/fused/). Compiled to PTX by build.rs
// when the `cuda` feature is on. Every kernel reads f32 or bf16 and keeps its statistics
// (sums, maxima, log-sum-exp) in f32; the CPU implementations in src/fused/ are the
// reference they are tested against.
#include <cuda_bf16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float x) { return __float2bfloat16(x); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32); `shared` holds 33 floats.
__device__ float block_sum(float v, float* shared) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // `shared` may still be read from a previous reduction
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? shared[lane] : 0.f;
    v = warp_sum(v);
    if (lane == 0) shared[32] = v;
  }
  __syncthreads();
  return shared[32];
}

__device__ float block_max(float v, float* shared) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? shared[lane] : -INFINITY;
    v = warp_max(v);
    if (lane == 0) shared[32] = v;
  }
  __syncthreads();
  return shared[32];
}

// ---- RMSNorm without weight: y = x * rsqrt(mean(x^2) + eps); one warp per row. ----

template <typename T>
__device__ void rms_norm_fwd(const T* x, T* y, int rows, int cols, float eps) {
  int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* xr = x + (size_t)row * cols;
  T* yr = y + (size_t)row * cols;
  float ss = 0.f;
  for (int i = lane; i < cols; i += 32) { float v = to_f(xr[i]); ss += v * v; }
  float r = rsqrtf(warp_sum(ss) / cols + eps);
  for (int i = lane; i < cols; i += 32) yr[i] = from_f<T>(to_f(xr[i]) * r);
}

// dx = r * g - r^3 * x * mean(g * x), with r recomputed from x.
template <typename T>
__device__ void rms_norm_bwd(const T* x, const T* g, T* dx, int rows, int cols, float eps) {
  int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* xr = x + (size_t)row * cols;
  const T* gr = g + (size_t)row * cols;
  T* dr = dx + (size_t)row * cols;
  float ss = 0.f, gx = 0.f;
  for (int i = lane; i < cols; i += 32) {
    float xv = to_f(xr[i]);
    ss += xv * xv;
    gx += to_f(gr[i]) * xv;
  }
  ss = warp_sum(ss);
  gx = warp_sum(gx);
  float r = rsqrtf(ss / cols + eps);
  float c = r * r * r * gx / cols;
  for (int i = lane; i < cols; i += 32) dr[i] = from_f<T>(r * to_f(gr[i]) - c * to_f(xr[i]));
}

// ---- Causal softmax of scaled scores: row `row` is query position row % cols. ----

template <typename T>
__device__ void causal_softmax_fwd(const T* s, T* y, int cols, float scale) {
  __shared__ float shared[33];
  size_t row = blockIdx.x;
  int pos = (int)(row % cols);
  const T* sr = s + row * cols;
  T* yr = y + row * cols;
  float m = -INFINITY;
  for (int j = threadIdx.x; j <= pos; j += blockDim.x) m = fmaxf(m, to_f(sr[j]) * scale);
  m = block_max(m, shared);
  float sum = 0.f;
  for (int j = threadIdx.x; j <= pos; j += blockDim.x) sum += __expf(to_f(sr[j]) * scale - m);
  float inv = 1.f / block_sum(sum, shared);
  for (int j = threadIdx.x; j < cols; j += blockDim.x)
    yr[j] = from_f<T>(j <= pos ? __expf(to_f(sr[j]) * scale - m) * inv : 0.f);
}

// ds = scale * y * (g - sum(g * y)); masked positions have y = 0, hence ds = 0.
template <typename T>
__device__ void causal_softmax_bwd(const T* y, const T* g, T* ds, int cols, float scale) {
  __shared__ float shared[33];
  size_t row = blockIdx.x;
  const T* yr = y + row * cols;
  const T* gr = g + row * cols;
  T* dr = ds + row * cols;
  float dot = 0.f;
  for (int j = threadIdx.x; j < cols; j += blockDim.x) dot += to_f(gr[j]) * to_f(yr[j]);
  dot = block_sum(dot, shared);
  for (int j = threadIdx.x; j < cols; j += blockDim.x)
    dr[j] = from_f<T>(scale * to_f(yr[j]) * (to_f(gr[j]) - dot));
}

// ---- Soft-capped softmax cross-entropy over the vocabulary; one block per row. ----

__device__ __forceinline__ float capped(float l, float cap) {
  return cap > 0.f ? cap * tanhf(l / cap) : l;
}

// Online max / sum-of-exp over the row, merged across the block.
template <typename T>
__device__ void row_logsumexp(const T* lr, int cols, float cap, float* shared, float* m_out, float* s_out) {
  float m = -INFINITY, s = 0.f;
  for (int j = threadIdx.x; j < cols; j += blockDim.x) {
    float z = capped(to_f(lr[j]), cap);
    if (z > m) { s = s * __expf(m - z) + 1.f; m = z; } else { s += __expf(z - m); }
  }
  float bm = block_max(m, shared);
  float bs = block_sum(m == -INFINITY ? 0.f : s * __expf(m - bm), shared);
  *m_out = bm;
  *s_out = bs;
}

template <typename T>
__device__ void cross_entropy_fwd(const T* logits, const uint32_t* targets, float* loss, int cols, float cap) {
  __shared__ float shared[33];
  size_t row = blockIdx.x;
  const T* lr = logits + row * cols;
  float m, s;
  row_logsumexp(lr, cols, cap, shared, &m, &s);
  if (threadIdx.x == 0) {
    uint32_t t = targets[row];
    loss[row] = t < (uint32_t)cols ? m + logf(s) - capped(to_f(lr[t]), cap) : NAN;
  }
}

// dlogits = g * (softmax(z) - onehot(t)) * dz/dlogit, with dz/dlogit = 1 - (z / cap)^2.
template <typename T>
__device__ void cross_entropy_bwd(const T* logits, const uint32_t* targets, const float* g, T* dl, int cols, float cap) {
  __shared__ float shared[33];
  size_t row = blockIdx.x;
  const T* lr = logits + row * cols;
  T* dr = dl + row * cols;
  float m, s;
  row_logsumexp(lr, cols, cap, shared, &m, &s);
  float inv = 1.f / s, gr = g[row];
  uint32_t t = targets[row];
  for (int j = threadIdx.x; j < cols; j += blockDim.x) {
    float z = capped(to_f(lr[j]), cap);
    float d = gr * (__expf(z - m) * inv - (j == (int)t ? 1.f : 0.f));
    if (cap > 0.f) { float u = z / cap; d *= 1.f - u * u; }
    dr[j] = from_f<T>(d);
  }
}

// ---- AdamW on f32 master weights: moments `mv` = [m (n) | v (n)]. ----

extern "C" __global__ void adamw_moments(float* mv, const float* g, size_t n, float scale, float b1, float b2) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    float gi = g[i] * scale;
    mv[i] = b1 * mv[i] + (1.f - b1) * gi;
    mv[n + i] = b2 * mv[n + i] + (1.f - b2) * gi * gi;
  }
}

extern "C" __global__ void adamw_apply(float* p, const float* mv, size_t n, float lr, float decay, float bc1, float bc2, float eps) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    float update = (mv[i] / bc1) / (sqrtf(mv[n + i] / bc2) + eps);
    p[i] = p[i] * decay - lr * update;
  }
}

// ---- Entry points, one per dtype. ----

#define ROWWISE(NAME, T, SUFFIX)                                                              \
  extern "C" __global__ void rms_norm_fwd_##SUFFIX(const T* x, T* y, int rows, int cols, float eps) { \
    rms_norm_fwd<T>(x, y, rows, cols, eps);                                                   \
  }                                                                                           \
  extern "C" __global__ void rms_norm_bwd_##SUFFIX(const T* x, const T* g, T* dx, int rows, int cols, float eps) { \
    rms_norm_bwd<T>(x, g, dx, rows, cols, eps);                                               \
  }                                                                                           \
  extern "C" __global__ void causal_softmax_fwd_##SUFFIX(const T* s, T* y, int cols, float scale) { \
    causal_softmax_fwd<T>(s, y, cols, scale);                                                 \
  }                                                                                           \
  extern "C" __global__ void causal_softmax_bwd_##SUFFIX(const T* y, const T* g, T* ds, int cols, float scale) { \
    causal_softmax_bwd<T>(y, g, ds, cols, scale);                                             \
  }                                                                                           \
  extern "C" __global__ void cross_entropy_fwd_##SUFFIX(const T* l, const uint32_t* t, float* loss, int cols, float cap) { \
    cross_entropy_fwd<T>(l, t, loss, cols, cap);                                              \
  }                                                                                           \
  extern "C" __global__ void cross_entropy_bwd_##SUFFIX(const T* l, const uint32_t* t, const float* g, T* dl, int cols, float cap) { \
    cross_entropy_bwd<T>(l, t, g, dl, cols, cap);                                             \
  }

ROWWISE(all, float, f32)
ROWWISE(all, bf16, bf16)
