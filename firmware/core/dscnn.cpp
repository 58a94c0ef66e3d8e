// The dscnn family's int8 extractor (docs/learning.md section 2): see dscnn.h.
#include "dscnn.h"

#include <string.h>

#include "fp_exact.h"  // last: e = a * q + b rounded twice, as the reference computes it

namespace tinyfed {
namespace {

constexpr int kC = kDscnnChannels;
constexpr int32_t kMultiplierMin = 0x40000000;  // spec: m in [2^30, 2^31)
constexpr int kShiftMin = 1;                     // spec: sh in [1, 62]
constexpr int kShiftMax = 62;
constexpr int32_t kInt8Max = 127;
constexpr int32_t kInt8Min = -128;

// The ping-pong activation buffers (static: the board has no heap) and the pointwise
// layer's per-channel bias with the input zero point folded in.
int8_t g_buf_a[kDscnnBufA];
int8_t g_buf_b[kDscnnBufB];
int32_t g_corr[kC];

// requant + zero point + clamp to [lo, 127]. When sh >= 32 (every layer of a trained model:
// its multipliers are far below 1), the 64-bit shift is a 32-bit shift of the high word
// (floor(floor(t / 2^32) / 2^(sh-32)) = floor(t / 2^sh)); the result is identical.
inline int8_t requant_clamp(int32_t acc, int32_t m, int sh, int32_t zp, int32_t lo) {
  int32_t r = 0;
  const int64_t t = static_cast<int64_t>(acc) * static_cast<int64_t>(m) +
                    (static_cast<int64_t>(1) << (sh - 1));
  if (sh >= 32) {
    r = static_cast<int32_t>(t >> 32) >> (sh - 32);
  } else {
    r = static_cast<int32_t>(t >> sh);
  }
  int32_t v = zp + r;
  if (v < lo) v = lo;
  if (v > kInt8Max) v = kInt8Max;
  return static_cast<int8_t>(v);
}

bool zp_ok(int32_t zp) { return zp >= kInt8Min && zp <= kInt8Max; }

bool conv_ok(const DscnnConv& l) {
  if (l.w == nullptr || l.bias == nullptr || l.m == nullptr || l.sh == nullptr) return false;
  if (!zp_ok(l.in_zp) || !zp_ok(l.out_zp)) return false;
  for (int c = 0; c < kC; ++c) {
    if (l.m[c] < kMultiplierMin || l.sh[c] < kShiftMin || l.sh[c] > kShiftMax) return false;
  }
  return true;
}

}  // namespace

Status dscnn_check(const DscnnWeights& wts) {
  if (!conv_ok(wts.conv0)) return Status::kBadArgument;
  for (int i = 0; i < kDscnnBlocks; ++i) {
    if (!conv_ok(wts.dw[i]) || !conv_ok(wts.pw[i])) return Status::kBadArgument;
  }
  if (wts.pool_m < kMultiplierMin || wts.pool_sh < kShiftMin || wts.pool_sh > kShiftMax ||
      !zp_ok(wts.pool_in_zp) || !zp_ok(wts.pool_out_zp)) {
    return Status::kBadArgument;
  }
  if (wts.a == nullptr || wts.b == nullptr) return Status::kBadArgument;
  return Status::kOk;
}

Status dscnn_conv0(const int8_t* in, const DscnnConv& l, int8_t* out) {
  if (in == nullptr || out == nullptr || !conv_ok(l)) return Status::kBadArgument;
  for (int oy = 0; oy < kDscnnH0; ++oy) {
    for (int ox = 0; ox < kDscnnW0; ++ox) {
      // The 9 taps minus the zero point; padding reads the zero point, a real 0.
      int32_t v[kDscnnTaps];
      for (int ky = 0; ky < 3; ++ky) {
        const int iy = 2 * oy - 1 + ky;
        for (int kx = 0; kx < 3; ++kx) {
          const int ix = 2 * ox - 1 + kx;
          const bool inside = iy >= 0 && iy < kDscnnInH && ix >= 0 && ix < kDscnnInW;
          v[3 * ky + kx] = inside ? static_cast<int32_t>(in[iy * kDscnnInW + ix]) - l.in_zp : 0;
        }
      }
      int8_t* o = out + (oy * kDscnnW0 + ox) * kC;
      const int8_t* w = l.w;
      for (int c = 0; c < kC; ++c, w += kDscnnTaps) {
        const int32_t acc = l.bias[c] + w[0] * v[0] + w[1] * v[1] + w[2] * v[2] +
                            w[3] * v[3] + w[4] * v[4] + w[5] * v[5] + w[6] * v[6] +
                            w[7] * v[7] + w[8] * v[8];
        o[c] = requant_clamp(acc, l.m[c], l.sh[c], l.out_zp, l.out_zp);
      }
    }
  }
  return Status::kOk;
}

Status dscnn_depthwise(const int8_t* in, int h, int w, int stride, const DscnnConv& l,
                       int8_t* out) {
  if (in == nullptr || out == nullptr || h < 1 || w < 1 || (stride != 1 && stride != 2) ||
      !conv_ok(l)) {
    return Status::kBadArgument;
  }
  const int oh = (h - 1) / stride + 1;
  const int ow = (w - 1) / stride + 1;
  for (int oy = 0; oy < oh; ++oy) {
    const int y0 = oy * stride - 1;
    const int ky0 = y0 < 0 ? 1 : 0;                // first kernel row inside the input
    const int ky1 = y0 + 2 >= h ? h - 1 - y0 : 2;  // last one
    for (int ox = 0; ox < ow; ++ox) {
      const int x0 = ox * stride - 1;
      const int kx0 = x0 < 0 ? 1 : 0;
      const int kx1 = x0 + 2 >= w ? w - 1 - x0 : 2;
      int8_t* o = out + (oy * ow + ox) * kC;
      if (ky0 == 0 && ky1 == 2 && kx0 == 0 && kx1 == 2) {
        // Interior: all 9 taps, unrolled; rows of the input are w * 64 bytes apart.
        const int8_t* p = in + (y0 * w + x0) * kC;
        const int row = w * kC;
        const int32_t zp = l.in_zp;
        const int8_t* k = l.w;
        for (int c = 0; c < kC; ++c, ++p, k += kDscnnTaps) {
          int32_t acc = l.bias[c];
          acc += k[0] * (p[0] - zp) + k[1] * (p[kC] - zp) + k[2] * (p[2 * kC] - zp);
          acc += k[3] * (p[row] - zp) + k[4] * (p[row + kC] - zp) +
                 k[5] * (p[row + 2 * kC] - zp);
          acc += k[6] * (p[2 * row] - zp) + k[7] * (p[2 * row + kC] - zp) +
                 k[8] * (p[2 * row + 2 * kC] - zp);
          o[c] = requant_clamp(acc, l.m[c], l.sh[c], l.out_zp, l.out_zp);
        }
        continue;
      }
      // Border: only the taps inside the input (padding contributes 0).
      for (int c = 0; c < kC; ++c) {
        int32_t acc = l.bias[c];
        const int8_t* k = l.w + c * kDscnnTaps;
        for (int ky = ky0; ky <= ky1; ++ky) {
          const int8_t* p = in + ((y0 + ky) * w + x0) * kC + c;
          for (int kx = kx0; kx <= kx1; ++kx) {
            acc += k[3 * ky + kx] * (p[kx * kC] - l.in_zp);
          }
        }
        o[c] = requant_clamp(acc, l.m[c], l.sh[c], l.out_zp, l.out_zp);
      }
    }
  }
  return Status::kOk;
}

Status dscnn_pointwise(const int8_t* in, int n, const DscnnConv& l, int8_t* out) {
  if (in == nullptr || out == nullptr || n < 0 || !conv_ok(l)) return Status::kBadArgument;
  // acc = bias - in_zp * sum_j w[c][j] + sum_j w[c][j] x[j]: the zero point leaves the inner
  // loop, which then multiplies raw int8 values.
  for (int c = 0; c < kC; ++c) {
    int32_t sum = 0;
    for (int j = 0; j < kC; ++j) sum += l.w[c * kC + j];
    g_corr[c] = l.bias[c] - l.in_zp * sum;
  }
  for (int p = 0; p < n; ++p) {
    const int8_t* x = in + p * kC;
    int8_t* o = out + p * kC;
    // Four output channels at a time: each input value is loaded once for four products;
    // the four weight rows are 64, 128 and 192 bytes after the first (immediate offsets).
    for (int c = 0; c < kC; c += 4) {
      const int8_t* w = l.w + c * kC;
      int32_t a0 = g_corr[c];
      int32_t a1 = g_corr[c + 1];
      int32_t a2 = g_corr[c + 2];
      int32_t a3 = g_corr[c + 3];
      for (int j = 0; j < kC; j += 2) {
        const int32_t x0 = x[j];
        const int32_t x1 = x[j + 1];
        a0 += w[j] * x0 + w[j + 1] * x1;
        a1 += w[kC + j] * x0 + w[kC + j + 1] * x1;
        a2 += w[2 * kC + j] * x0 + w[2 * kC + j + 1] * x1;
        a3 += w[3 * kC + j] * x0 + w[3 * kC + j + 1] * x1;
      }
      o[c] = requant_clamp(a0, l.m[c], l.sh[c], l.out_zp, l.out_zp);
      o[c + 1] = requant_clamp(a1, l.m[c + 1], l.sh[c + 1], l.out_zp, l.out_zp);
      o[c + 2] = requant_clamp(a2, l.m[c + 2], l.sh[c + 2], l.out_zp, l.out_zp);
      o[c + 3] = requant_clamp(a3, l.m[c + 3], l.sh[c + 3], l.out_zp, l.out_zp);
    }
  }
  return Status::kOk;
}

Status dscnn_pool(const int8_t* in, int n, const DscnnWeights& wts, int8_t* out) {
  if (in == nullptr || out == nullptr || n < 1 || wts.pool_m < kMultiplierMin ||
      wts.pool_sh < kShiftMin || wts.pool_sh > kShiftMax) {
    return Status::kBadArgument;
  }
  for (int c = 0; c < kC; ++c) {
    int32_t acc = 0;
    for (int p = 0; p < n; ++p) acc += in[p * kC + c] - wts.pool_in_zp;
    out[c] = requant_clamp(acc, wts.pool_m, wts.pool_sh, wts.pool_out_zp, kInt8Min);
  }
  return Status::kOk;
}

Status dscnn_extract(const int8_t* input, const DscnnWeights& wts, int8_t* embedding,
                     DscnnTrace* trace) {
  if (input == nullptr || embedding == nullptr) return Status::kBadArgument;
  Status s = dscnn_check(wts);
  if (!ok(s)) return s;
  s = dscnn_conv0(input, wts.conv0, g_buf_a);
  if (!ok(s)) return s;
  if (trace != nullptr && trace->conv0 != nullptr) memcpy(trace->conv0, g_buf_a, kDscnnBufA);
  // ds1.dw reads the 25 x 20 map in A; afterwards every map is 13 x 10 and alternates B -> A.
  for (int i = 0; i < kDscnnBlocks; ++i) {
    if (i == 0) {
      s = dscnn_depthwise(g_buf_a, kDscnnH0, kDscnnW0, 2, wts.dw[0], g_buf_b);
    } else {
      s = dscnn_depthwise(g_buf_a, kDscnnH1, kDscnnW1, 1, wts.dw[i], g_buf_b);
    }
    if (!ok(s)) return s;
    if (trace != nullptr && trace->dw[i] != nullptr) memcpy(trace->dw[i], g_buf_b, kDscnnBufB);
    s = dscnn_pointwise(g_buf_b, kDscnnPositions, wts.pw[i], g_buf_a);
    if (!ok(s)) return s;
    if (trace != nullptr && trace->pw[i] != nullptr) memcpy(trace->pw[i], g_buf_a, kDscnnBufB);
  }
  return dscnn_pool(g_buf_a, kDscnnPositions, wts, embedding);
}

Status dscnn_embedding_float(const int8_t* q, const DscnnWeights& wts, float* e) {
  if (q == nullptr || e == nullptr || wts.a == nullptr || wts.b == nullptr) {
    return Status::kBadArgument;
  }
  for (int c = 0; c < kC; ++c) e[c] = wts.a[c] * static_cast<float>(q[c]) + wts.b[c];
  return Status::kOk;
}

}  // namespace tinyfed
