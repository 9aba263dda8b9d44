// mma.h for the CPU emulator (cuda/emu): the TF32 WMMA subset the kernels
// use. On a GPU a fragment is spread over the 32 lanes of a warp; here every
// lane loads whole A and B tiles, and of an accumulator it computes and
// stores only its share, the elements i with i % 32 == lane (mma_sync,
// store_matrix_sync), so that the warp does the product once, not 32 times.
// The kernels touch a fragment's elements only uniformly (fill, convert),
// as WMMA allows, so the layout does not show.
#pragma once
#include <cstdint>
#include <cstring>

#include "../emu.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K>
struct shape;
template <int M, int N, int K>
struct shape<matrix_a, M, N, K> {
  static const int rows = M, cols = K;
};
template <int M, int N, int K>
struct shape<matrix_b, M, N, K> {
  static const int rows = K, cols = N;
};
template <int M, int N, int K>
struct shape<accumulator, M, N, K> {
  static const int rows = M, cols = N;
};

// fragment: element (r, c) of the tile at x[r * cols + c].
template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static const int rows = shape<Use, M, N, K>::rows, cols = shape<Use, M, N, K>::cols;
  static const int num_elements = rows * cols;
  float x[rows * cols];
};

// __float_to_tf32 rounds to 10 mantissa bits, to nearest with ties away
// from zero (cvt.rna.tf32.f32).
inline float __float_to_tf32(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  if ((b & 0x7f800000u) != 0x7f800000u) b = (b + 0x1000u) & 0xffffe000u;
  std::memcpy(&f, &b, 4);
  return f;
}

template <class Use, int M, int N, int K, class T, class Layout>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout> &f, float v) {
  for (int i = 0; i < f.num_elements; i++) f.x[i] = v;
}

template <class Use, int M, int N, int K, class T>
inline void load_matrix_sync(fragment<Use, M, N, K, T, row_major> &f, const float *p, unsigned ldm) {
  for (int r = 0; r < f.rows; r++)
    for (int c = 0; c < f.cols; c++) f.x[r * f.cols + c] = p[(size_t)r * ldm + c];
}

template <class Use, int M, int N, int K, class T>
inline void load_matrix_sync(fragment<Use, M, N, K, T, col_major> &f, const float *p, unsigned ldm) {
  for (int r = 0; r < f.rows; r++)
    for (int c = 0; c < f.cols; c++) f.x[r * f.cols + c] = p[(size_t)c * ldm + r];
}

template <int M, int N, int K, class T, class LA, class LB>
inline void mma_sync(fragment<accumulator, M, N, K, float> &d, const fragment<matrix_a, M, N, K, T, LA> &a,
                     const fragment<matrix_b, M, N, K, T, LB> &b, const fragment<accumulator, M, N, K, float> &c) {
  float out[M * N];
  std::memcpy(out, c.x, sizeof out);
  for (int i = (int)emu::lane(); i < M * N; i += 32) {
    const int m = i / N, n = i % N;
    float s = c.x[i];
    for (int k = 0; k < K; k++) s += a.x[m * K + k] * b.x[k * N + n];
    out[i] = s;
  }
  std::memcpy(d.x, out, sizeof out);
}

template <int M, int N, int K>
inline void store_matrix_sync(float *p, const fragment<accumulator, M, N, K, float> &f, unsigned ldm, layout_t l) {
  for (int i = (int)emu::lane(); i < M * N; i += 32) {
    const int r = i / N, c = i % N;
    if (l == mem_row_major)
      p[(size_t)r * ldm + c] = f.x[i];
    else
      p[(size_t)c * ldm + r] = f.x[i];
  }
}

}  // namespace wmma
}  // namespace nvcuda
