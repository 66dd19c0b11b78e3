// Weight-only int8 matrix-vector products for batch-1 decode on CPU, as XLA FFI handlers.
//
// y[r, n] = scale[n] * sum_k x[r, k] * q[k, n]     (KxN: a kernel stored [K, N])
// y[r, n] = scale[n] * sum_k x[r, k] * q[n, k]     (NxK: the tied embedding, stored [V, D])
//
// XLA's CPU backend converts an int8 operand to float before its dot (4x the bytes of the
// float weights, read twice); these loops stream the int8 weights once. The work is cut into
// chunks (of K for KxN, each with its own partial sums; of N for NxK) taken from an atomic
// counter by the calling thread and by helpers scheduled on XLA's intra-op thread pool; the
// caller waits only for chunks that were taken, so a helper that starts late finds nothing
// left and touches no buffer. Compiled by int8_matvec.py (g++ -O3 -march=native
// -fopenmp-simd: the dot products' float sums are vectorized, so their order differs from a
// sequential sum by float rounding).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Work {
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
};

// Runs body(chunk) for chunk in [0, chunks) on the caller and the pool's threads.
template <typename Body>
void ParallelChunks(ffi::ThreadPool& pool, int64_t chunks, Body body) {
  auto work = std::make_shared<Work>();
  auto run = [work, chunks, body]() {
    for (int64_t c = work->next.fetch_add(1); c < chunks; c = work->next.fetch_add(1)) {
      body(c);
      work->done.fetch_add(1, std::memory_order_release);
    }
  };
  int64_t helpers = std::min<int64_t>(pool.num_threads(), chunks) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule(decltype(run)(run));  // a copy each
  run();
  while (work->done.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
}

constexpr int64_t kChunks = 8;

ffi::Error MatvecKxN(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S8> q,
                     ffi::Buffer<ffi::F32> scale, ffi::ResultBuffer<ffi::F32> y) {
  auto xd = x.dimensions(), qd = q.dimensions();
  if (xd.size() != 2 || qd.size() != 2 || xd[1] != qd[0] || scale.element_count() != qd[1]) {
    return ffi::Error::InvalidArgument("int8_matvec_kxn: need x [R, K], q [K, N], scale [N]");
  }
  const int64_t rows = xd[0], k_size = qd[0], n_size = qd[1];
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(kChunks, k_size / 16));
  std::vector<float> partial(chunks * rows * n_size, 0.0f);
  const float* xp = x.typed_data();
  const int8_t* qp = q.typed_data();
  float* pp = partial.data();
  ParallelChunks(pool, chunks, [=](int64_t c) {
    const int64_t k0 = k_size * c / chunks, k1 = k_size * (c + 1) / chunks;
    for (int64_t r = 0; r < rows; ++r) {
      float* __restrict acc = pp + (c * rows + r) * n_size;
      const float* xr = xp + r * k_size;
      int64_t k = k0;
      for (; k + 4 <= k1; k += 4) {  // four rows of q per pass over acc
        const float x0 = xr[k], x1 = xr[k + 1], x2 = xr[k + 2], x3 = xr[k + 3];
        const int8_t* __restrict q0 = qp + k * n_size;
        const int8_t* __restrict q1 = q0 + n_size;
        const int8_t* __restrict q2 = q1 + n_size;
        const int8_t* __restrict q3 = q2 + n_size;
        for (int64_t n = 0; n < n_size; ++n) {
          acc[n] += x0 * static_cast<float>(q0[n]) + x1 * static_cast<float>(q1[n]) +
                    x2 * static_cast<float>(q2[n]) + x3 * static_cast<float>(q3[n]);
        }
      }
      for (; k < k1; ++k) {
        const float xk = xr[k];
        const int8_t* __restrict qk = qp + k * n_size;
        for (int64_t n = 0; n < n_size; ++n) acc[n] += xk * static_cast<float>(qk[n]);
      }
    }
  });
  const float* sp = scale.typed_data();
  float* yp = y->typed_data();
  for (int64_t r = 0; r < rows; ++r) {
    float* out = yp + r * n_size;
    for (int64_t n = 0; n < n_size; ++n) out[n] = 0.0f;
    for (int64_t c = 0; c < chunks; ++c) {
      const float* acc = pp + (c * rows + r) * n_size;
      for (int64_t n = 0; n < n_size; ++n) out[n] += acc[n];
    }
    for (int64_t n = 0; n < n_size; ++n) out[n] *= sp[n];
  }
  return ffi::Error::Success();
}

ffi::Error MatvecNxK(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S8> q,
                     ffi::Buffer<ffi::F32> scale, ffi::ResultBuffer<ffi::F32> y) {
  auto xd = x.dimensions(), qd = q.dimensions();
  if (xd.size() != 2 || qd.size() != 2 || xd[1] != qd[1] || scale.element_count() != qd[0]) {
    return ffi::Error::InvalidArgument("int8_matvec_nxk: need x [R, K], q [N, K], scale [N]");
  }
  const int64_t rows = xd[0], n_size = qd[0], k_size = qd[1];
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(kChunks * 4, n_size / 64));
  const float* xp = x.typed_data();
  const int8_t* qp = q.typed_data();
  const float* sp = scale.typed_data();
  float* yp = y->typed_data();
  ParallelChunks(pool, chunks, [=](int64_t c) {
    const int64_t n0 = n_size * c / chunks, n1 = n_size * (c + 1) / chunks;
    for (int64_t n = n0; n < n1; ++n) {
      const int8_t* qn = qp + n * k_size;
      for (int64_t r = 0; r < rows; ++r) {
        const float* xr = xp + r * k_size;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t k = 0; k < k_size; ++k) acc += xr[k] * static_cast<float>(qn[k]);
        yp[r * n_size + n] = acc * sp[n];
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

// Both handlers take (x f32, q s8, scale f32) and return y f32, with the intra-op pool.
static auto Binding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::S8>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(Int8MatvecKxN, MatvecKxN, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(Int8MatvecNxK, MatvecNxK, Binding());
