// Direct 3x3 'SAME' stride-1 convolution of NHWC float32 tensors and its kernel gradient, as XLA FFI
// handlers for the CPU. `direct.py` compiles this file on first use with the host's compiler
// (-O3 -march=native) and registers the handlers; why it exists is explained there.
//
// Both kernels keep a block of outputs in vector registers and stream the inputs past them
// (broadcast one input value, multiply-add it into a row of output channels), the layout oneDNN's
// direct convolutions use. Work is split by image over XLA's own intra-op thread pool; each image's rows
// pass through a small zero-bordered ring (PaddedRows), so the inner loops have no edge cases.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX512F__)
constexpr int kLanes = 16;
#else
constexpr int kLanes = 8;
#endif
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

// Output channels per register block: 16, so every layer of 16, 32, 64... channels fits whole blocks
// (CHANNEL_BLOCK in direct.py, which sends only such layers here).
constexpr int kBlock = 16;
constexpr int kVecs = kBlock / kLanes;
// Output pixels (forward) or input channels (kernel gradient) per register block: kRows * kVecs
// accumulators, which leaves registers for the operands (16 on AVX2, 32 on AVX-512).
constexpr int kRows = kLanes == 8 ? 6 : 12;
// The kernel gradient sums the batch in this many fixed groups of images, in parallel, whatever the
// thread count; enough groups to keep 8 threads busy, few enough that their partial sums stay small.
constexpr int64_t kKernelGradGroups = 8;

inline Vec Load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void Store(float* p, Vec v) { std::memcpy(p, &v, sizeof(v)); }
// *p in every lane, as one broadcast load (GCC turns the portable forms into shuffles).
inline Vec Splat(const float* p) {
#if defined(__AVX512F__)
  return reinterpret_cast<Vec>(_mm512_set1_ps(*p));
#elif defined(__AVX__)
  return reinterpret_cast<Vec>(_mm256_broadcast_ss(p));
#else
  Vec v;
  for (int i = 0; i < kLanes; ++i) v[i] = *p;
  return v;
#endif
}

// Pool threads to enlist besides the caller for n items: none without a pool (XLA's intra-op threading
// off) or for a single item.
int64_t Helpers(ffi::ThreadPool& pool, int64_t n) {
  return std::max<int64_t>(0, std::min<int64_t>(pool.num_threads() - 1, n - 1));
}

// Calls f(std::integral_constant<int, n>) for a runtime n in [1, N]: the register blocks' sizes are
// template arguments, so the compiler keeps their accumulators in registers, and a row's last, partial
// block gets a kernel of its own size.
template <int N = kRows, typename F>
inline void WithSize(int64_t n, F&& f) {
  if constexpr (N > 1) {
    if (n < N) return WithSize<N - 1>(n, f);
  }
  f(std::integral_constant<int, N>{});
}

// Runs body(i) for i in [0, n) on the calling thread and Helpers(pool, n) pool threads.
// The caller takes items too, so the loop finishes even when every pool thread is busy elsewhere.
template <typename Body>
void ParallelFor(ffi::ThreadPool pool, int64_t n, Body body) {
  struct Shared {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  auto shared = std::make_shared<Shared>();
  auto work = [shared, n, &body] {
    for (int64_t i; (i = shared->next.fetch_add(1)) < n;) {
      body(i);
      if (shared->done.fetch_add(1) + 1 == n) {
        std::lock_guard<std::mutex> lock(shared->mu);
        shared->cv.notify_all();
      }
    }
  };
  const int64_t helpers = Helpers(pool, n);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([work] { work(); });
  work();
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->cv.wait(lock, [&] { return shared->done.load() == n; });
}

// The zero-bordered rows of one (h, w, c) image, three at a time: output row r reads padded rows r, r+1
// and r+2. Each input row is copied once into a cache-sized ring instead of padding the whole image,
// which at 224x224 would add a pass over main memory.
class PaddedRows {
 public:
  PaddedRows(const float* image, int64_t h, int64_t w, int64_t c)
      : image_(image), h_(h), w_(w), c_(c), stride_((w + 2) * c), ring_(3 * stride_, 0.0f) {}

  // Pointers to padded rows r, r+1, r+2; call with r = 0, 1, 2, ... in order.
  void Window(int64_t r, const float* rows[3]) {
    for (; filled_ < r + 3; ++filled_) {
      float* dst = &ring_[(filled_ % 3) * stride_ + c_];
      if (filled_ == 0 || filled_ == h_ + 1) {
        std::fill(dst, dst + w_ * c_, 0.0f);
      } else {
        std::memcpy(dst, image_ + (filled_ - 1) * w_ * c_, w_ * c_ * sizeof(float));
      }
    }
    for (int i = 0; i < 3; ++i) rows[i] = &ring_[((r + i) % 3) * stride_];
  }

 private:
  const float* image_;
  int64_t h_, w_, c_, stride_, filled_ = 0;
  std::vector<float> ring_;
};

// The inner step of both kernels: acc[n] += column[n * stride] * row, for a register block of N rows of
// kBlock floats. One load per row vector and one broadcast per column value feed N * kVecs multiply-adds.
template <int N>
inline void RankOneUpdate(Vec (&acc)[N][kVecs], const float* column, int64_t stride, const float* row) {
  Vec r[kVecs];
  _Pragma("GCC unroll 16") for (int v = 0; v < kVecs; ++v) r[v] = Load(row + v * kLanes);
  _Pragma("GCC unroll 16") for (int n = 0; n < N; ++n) {
    Vec c = Splat(column + n * stride);
    _Pragma("GCC unroll 16") for (int v = 0; v < kVecs; ++v) acc[n][v] += c * r[v];
  }
}

// y[p, o0:o0+kBlock] for P consecutive pixels of one output row: rows[i] + x0 is the padded input's
// neighbour (i, 0) of the first pixel, k the (3, 3, ci, co) kernel's column o0.
template <int P>
inline void ConvPixels(const float* const rows[3], int64_t x0, const float* k, int64_t ci, int64_t co, float* y) {
  Vec acc[P][kVecs] = {};
  // A kernel row's 3 taps x ci channels are contiguous in both the padded input and the kernel.
  for (int i = 0; i < 3; ++i) {
    const float* xs = rows[i] + x0;
    const float* ks = k + i * 3 * ci * co;
    for (int64_t t = 0; t < 3 * ci; ++t) {
      RankOneUpdate<P>(acc, xs + t, ci, ks + t * co);
    }
  }
  _Pragma("GCC unroll 16") for (int p = 0; p < P; ++p) {
    _Pragma("GCC unroll 16") for (int v = 0; v < kVecs; ++v) Store(y + p * co + v * kLanes, acc[p][v]);
  }
}

ffi::Error ConvForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> kernel,
                       ffi::ResultBuffer<ffi::F32> y) {
  auto xd = x.dimensions(), kd = kernel.dimensions();
  if (xd.size() != 4 || kd.size() != 4 || kd[0] != 3 || kd[1] != 3 || kd[2] != xd[3] || kd[3] % kBlock) {
    return ffi::Error::InvalidArgument("direct_conv: needs NHWC x, a (3, 3, ci, 16k) kernel");
  }
  const int64_t b = xd[0], h = xd[1], w = xd[2], ci = xd[3], co = kd[3];
  const float* xs = x.typed_data();
  const float* k = kernel.typed_data();
  float* ys = y->typed_data();
  ParallelFor(pool, b, [&](int64_t n) {
    PaddedRows padded(xs + n * h * w * ci, h, w, ci);
    float* yn = ys + n * h * w * co;
    for (int64_t r = 0; r < h; ++r) {
      const float* rows[3];
      padded.Window(r, rows);
      for (int64_t o = 0; o < co; o += kBlock) {
        for (int64_t p = 0; p < w; p += kRows) {
          WithSize(std::min<int64_t>(kRows, w - p), [&](auto pixels) {
            ConvPixels<pixels()>(rows, p * ci, k + o, ci, co, yn + (r * w + p) * co + o);
          });
        }
      }
    }
  });
  return ffi::Error::Success();
}

// dk[i, j, c0:c0+C, o0:o0+kBlock] += sum over one row's pixels of x[pixel + (i, j), c] * g[pixel, o],
// xs pointing at the padded input's row i, column j, channel c0.
template <int C>
inline void KernelGradChannels(const float* xs, const float* g, int64_t w, int64_t ci, int64_t co, float* dk) {
  Vec acc[C][kVecs] = {};
  for (int64_t p = 0; p < w; ++p) {
    RankOneUpdate<C>(acc, xs + p * ci, 1, g + p * co);
  }
  _Pragma("GCC unroll 16") for (int c = 0; c < C; ++c) {
    _Pragma("GCC unroll 16") for (int v = 0; v < kVecs; ++v) {
      Store(dk + c * co + v * kLanes, Load(dk + c * co + v * kLanes) + acc[c][v]);
    }
  }
}

// acc[i, j, c, o] += the kernel gradient of one image: x (h, w, ci) and its output gradient g (h, w, co).
void AccumulateKernelGrad(const float* x, const float* g, int64_t h, int64_t w, int64_t ci, int64_t co,
                          float* acc) {
  PaddedRows padded(x, h, w, ci);
  for (int64_t r = 0; r < h; ++r) {
    const float* rows[3];
    padded.Window(r, rows);
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 3; ++j) {
        for (int64_t c = 0; c < ci; c += kRows) {
          for (int64_t o = 0; o < co; o += kBlock) {
            WithSize(std::min<int64_t>(kRows, ci - c), [&](auto channels) {
              KernelGradChannels<channels()>(rows[i] + j * ci + c, g + r * w * co + o, w, ci, co,
                                             acc + ((i * 3 + j) * ci + c) * co + o);
            });
          }
        }
      }
    }
  }
}

ffi::Error ConvKernelGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> g,
                          ffi::ResultBuffer<ffi::F32> dk) {
  auto xd = x.dimensions(), gd = g.dimensions();
  if (xd.size() != 4 || gd.size() != 4 || xd[0] != gd[0] || xd[1] != gd[1] || xd[2] != gd[2] || gd[3] % kBlock) {
    return ffi::Error::InvalidArgument("direct_conv: needs NHWC x and g of one batch and size, g of 16k channels");
  }
  const int64_t b = xd[0], h = xd[1], w = xd[2], ci = xd[3], co = gd[3], taps = 9 * ci * co;
  const float* xs = x.typed_data();
  const float* gs = g.typed_data();
  float* out = dk->typed_data();
  if (b == 0) {  // no images, no groups to split them into
    std::fill(out, out + taps, 0.0f);
    return ffi::Error::Success();
  }
  // One partial sum per fixed group of images, each summed in image order and the groups added in order:
  // the result is the same bit for bit whichever threads ran which group, so training is reproducible.
  const int64_t groups = std::min<int64_t>(b, kKernelGradGroups), per_group = (b + groups - 1) / groups;
  std::vector<std::vector<float>> partial(groups, std::vector<float>(taps, 0.0f));
  ParallelFor(pool, groups, [&](int64_t group) {
    float* acc = partial[group].data();
    for (int64_t n = group * per_group; n < std::min(b, (group + 1) * per_group); ++n) {
      AccumulateKernelGrad(xs + n * h * w * ci, gs + n * h * w * co, h, w, ci, co, acc);
    }
  });
  std::copy(partial[0].begin(), partial[0].end(), out);
  for (int64_t t = 1; t < groups; ++t) {
    for (int64_t e = 0; e < taps; ++e) out[e] += partial[t][e];
  }
  return ffi::Error::Success();
}

}  // namespace

// Both handlers take XLA's intra-op thread pool and two float32 arrays, and return one.
static auto TwoArraysToOne() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcxrConvForward, ConvForward, TwoArraysToOne());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcxrConvKernelGrad, ConvKernelGrad, TwoArraysToOne());
