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
constexpr int64_t kRequantLimit = 256;  // beyond +-256, zp + r clamps alike for any int8 zp

// The pointwise layer's per-channel bias with the input zero point folded in (the activations
// are the caller's DscnnWork).
int32_t g_corr[kC];
int8_t g_patch[kDscnnTaps * kC];  // a depthwise window at the border, padding filled in

// requant + zero point + clamp to [lo, 127]. When sh >= 33 (every layer of a trained model:
// its multipliers are far below 1) only the high word of the product is needed
// (floor(floor(t / 2^32) / 2^(sh-32)) = floor(t / 2^sh)); the result is identical.
#if defined(__GNUC__)
#define TINYFED_INLINE inline __attribute__((always_inline))  // -Os would call it per output
#else
#define TINYFED_INLINE inline
#endif

TINYFED_INLINE int8_t requant_clamp(int32_t acc, int32_t m, int sh, int32_t zp, int32_t lo) {
  const int64_t p = static_cast<int64_t>(acc) * static_cast<int64_t>(m);
  int32_t r = 0;
  if (sh >= 33) {
    // (p + 2^(sh-1)) >> sh with p = hi * 2^32 + lo (0 <= lo < 2^32): the rounding constant
    // lies in the high word and lo cannot carry, so it is (hi + 2^(sh-33)) >> (sh - 32);
    // |hi| < 2^30, no overflow.
    const int32_t hi = static_cast<int32_t>(p >> 32);
    r = (hi + (static_cast<int32_t>(1) << (sh - 33))) >> (sh - 32);
  } else {
    // A small shift can give a value beyond int32: saturate it first (anything outside
    // [-256, 256] clamps to the same int8 as the exact value, since |zp| <= 128).
    int64_t r64 = (p + (static_cast<int64_t>(1) << (sh - 1))) >> sh;
    if (r64 > kRequantLimit) r64 = kRequantLimit;
    if (r64 < -kRequantLimit) r64 = -kRequantLimit;
    r = static_cast<int32_t>(r64);
  }
  int32_t v = zp + r;
  if (v < lo) v = lo;
  if (v > kInt8Max) v = kInt8Max;
  return static_cast<int8_t>(v);
}

#if TINYFED_DSCNN_DSP

// The Cortex-M4's DSP extension (ARMv7E-M): SXTB16 unpacks bytes 0 and 2 (or, rotated, 1 and
// 3) of a word into two int16 halves, SMLAD adds both halves' products to an int32. Exact
// integer arithmetic: the same results as the portable loop (bench/ checks them against it).
inline uint32_t load32(const int8_t* p) {
  uint32_t v = 0;
  memcpy(&v, p, sizeof v);  // LDR (the M4 reads unaligned words)
  return v;
}
TINYFED_INLINE uint32_t sxtb16(uint32_t v) {
  uint32_t r;
  __asm("sxtb16 %0, %1" : "=r"(r) : "r"(v));
  return r;
}
TINYFED_INLINE uint32_t sxtb16_ror8(uint32_t v) {
  uint32_t r;
  __asm("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
  return r;
}
TINYFED_INLINE int32_t smlad(uint32_t a, uint32_t b, int32_t acc) {
  int32_t r;
  __asm("smlad %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
  return r;
}

// Four output channels, one position: 4 inputs per step, each weight word unpacked once.
TINYFED_INLINE void pw_dsp_step(const int8_t* w, uint32_t xe, uint32_t xo, int32_t& acc) {
  const uint32_t wv = load32(w);
  acc = smlad(sxtb16(wv), xe, acc);
  acc = smlad(sxtb16_ror8(wv), xo, acc);
}

// Two int16 values (each within int16) in one word: a in bits 0-15, b in bits 16-31.
inline uint32_t pack16(int32_t a, int32_t b) {
  return (static_cast<uint32_t>(a) & 0xffffu) | (static_cast<uint32_t>(b) << 16);
}
#endif  // TINYFED_DSCNN_DSP

// acc = bias - in_zp * sum_j w[c][j] + sum_j w[c][j] x[j]: the zero point leaves the
// pointwise inner loop, which then multiplies raw int8 values.
void fold_zero_point(const DscnnConv& l) {
  for (int c = 0; c < kC; ++c) {
    int32_t sum = 0;
    for (int j = 0; j < kC; ++j) sum += l.w[c * kC + j];
    g_corr[c] = l.bias[c] - l.in_zp * sum;
  }
}

// Depthwise 3 x 3 for the 64 channels of one output position: the window's top-left tap at p,
// rows `row` bytes apart, taps 64 bytes apart; acc = g_corr[c] + sum w * x (the zero point is
// folded into g_corr).
TINYFED_INLINE void dw_channels(const int8_t* p, int row, const DscnnConv& l, int8_t* o) {
  const int8_t* k = l.w;
  for (int c = 0; c < kC; ++c, ++p, k += kDscnnTaps) {
    int32_t acc = g_corr[c];
    acc += k[0] * p[0] + k[1] * p[kC] + k[2] * p[2 * kC];
    acc += k[3] * p[row] + k[4] * p[row + kC] + k[5] * p[row + 2 * kC];
    acc += k[6] * p[2 * row] + k[7] * p[2 * row + kC] + k[8] * p[2 * row + 2 * kC];
    o[c] = requant_clamp(acc, l.m[c], l.sh[c], l.out_zp, l.out_zp);
  }
}

bool zp_ok(int32_t zp) { return zp >= kInt8Min && zp <= kInt8Max; }

bool requant_ok(const DscnnConv& l) {
  if (l.m == nullptr || l.sh == nullptr || !zp_ok(l.in_zp) || !zp_ok(l.out_zp)) return false;
  for (int c = 0; c < kC; ++c) {
    if (l.m[c] < kMultiplierMin || l.sh[c] < kShiftMin || l.sh[c] > kShiftMax) return false;
  }
  return true;
}

bool conv_ok(const DscnnConv& l) {
  return l.w != nullptr && l.bias != nullptr && requant_ok(l);
}

}  // namespace

Status dscnn_check(const DscnnWeights& wts) {
  if (!conv_ok(wts.conv0)) return Status::kBadArgument;
  for (int i = 0; i < kDscnnBlocks; ++i) {
    if (!conv_ok(wts.dw[i]) || !conv_ok(wts.pw[i])) return Status::kBadArgument;
  }
  if (!requant_ok(wts.pool)) return Status::kBadArgument;
  if (wts.a == nullptr || wts.b == nullptr) return Status::kBadArgument;
  return Status::kOk;
}

namespace {

// conv0's output row oy (20 positions x 64 channels) into out.
void conv0_row(const int8_t* in, const DscnnConv& l, int oy, int8_t* out) {
  {
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
      int8_t* o = out + ox * kC;
      const int8_t* w = l.w;
#if TINYFED_DSCNN_DSP
      // SMLAD: taps (0, 2), (1, 3), (4, 6), (5, 7) as int16 pairs, matching SXTB16's unpacking
      // of the weight words w[0..3] and w[4..7]; tap 8 alone.
      const uint32_t v02 = pack16(v[0], v[2]), v13 = pack16(v[1], v[3]);
      const uint32_t v46 = pack16(v[4], v[6]), v57 = pack16(v[5], v[7]);
      for (int c = 0; c < kC; ++c, w += kDscnnTaps) {
        const uint32_t w03 = load32(w);
        const uint32_t w47 = load32(w + 4);
        int32_t acc = l.bias[c] + w[8] * v[8];
        acc = smlad(sxtb16(w03), v02, acc);
        acc = smlad(sxtb16_ror8(w03), v13, acc);
        acc = smlad(sxtb16(w47), v46, acc);
        acc = smlad(sxtb16_ror8(w47), v57, acc);
        o[c] = requant_clamp(acc, l.m[c], l.sh[c], l.out_zp, l.out_zp);
      }
      continue;
#endif
      for (int c = 0; c < kC; ++c, w += kDscnnTaps) {
        const int32_t acc = l.bias[c] + w[0] * v[0] + w[1] * v[1] + w[2] * v[2] +
                            w[3] * v[3] + w[4] * v[4] + w[5] * v[5] + w[6] * v[6] +
                            w[7] * v[7] + w[8] * v[8];
        o[c] = requant_clamp(acc, l.m[c], l.sh[c], l.out_zp, l.out_zp);
      }
    }
  }
}

}  // namespace

Status dscnn_conv0(const int8_t* in, const DscnnConv& l, int8_t* out) {
  if (in == nullptr || out == nullptr || !conv_ok(l)) return Status::kBadArgument;
  for (int oy = 0; oy < kDscnnH0; ++oy) conv0_row(in, l, oy, out + oy * kDscnnW0 * kC);
  return Status::kOk;
}

namespace {

// Interior positions of a depthwise layer: bias - in_zp * (sum of the 9 weights).
void dw_fold(const DscnnConv& l) {
  for (int c = 0; c < kC; ++c) {
    int32_t sum = 0;
    for (int t = 0; t < kDscnnTaps; ++t) sum += l.w[c * kDscnnTaps + t];
    g_corr[c] = l.bias[c] - l.in_zp * sum;
  }
}

// One output row of a depthwise layer (after dw_fold): rows[k] is input row y0 + k (w x 64),
// or null where it is padding.
void dw_row(const int8_t* const rows[3], int w, int stride, const DscnnConv& l, int8_t* out) {
  const int ow = (w - 1) / stride + 1;
  const bool rows_ok = rows[0] != nullptr && rows[1] != nullptr && rows[2] != nullptr &&
                       rows[1] - rows[0] == rows[2] - rows[1];
  for (int ox = 0; ox < ow; ++ox) {
    const int x0 = ox * stride - 1;
    const int kx0 = x0 < 0 ? 1 : 0;                // first kernel column inside the input
    const int kx1 = x0 + 2 >= w ? w - 1 - x0 : 2;  // last one
    int8_t* o = out + ox * kC;
    if (rows_ok && kx0 == 0 && kx1 == 2) {
      // Interior: the 3 x 3 window in place.
      dw_channels(rows[0] + x0 * kC, static_cast<int>(rows[1] - rows[0]), l, o);
      continue;
    }
    // Border: a copy of the window with the zero point where it leaves the input (a real
    // 0: those taps add w * (zp - zp) = 0), then the same 9-tap loop.
    for (int ky = 0; ky < 3; ++ky) {
      for (int kx = 0; kx < 3; ++kx) {
        int8_t* dst = g_patch + (3 * ky + kx) * kC;
        if (rows[ky] == nullptr || kx < kx0 || kx > kx1) {
          memset(dst, static_cast<int>(l.in_zp), kC);
        } else {
          memcpy(dst, rows[ky] + (x0 + kx) * kC, kC);
        }
      }
    }
    dw_channels(g_patch, 3 * kC, l, o);
  }
}

}  // namespace

Status dscnn_depthwise(const int8_t* in, int h, int w, int stride, const DscnnConv& l,
                       int8_t* out) {
  if (in == nullptr || out == nullptr || h < 1 || w < 1 || (stride != 1 && stride != 2) ||
      !conv_ok(l)) {
    return Status::kBadArgument;
  }
  const int oh = (h - 1) / stride + 1;
  const int ow = (w - 1) / stride + 1;
  dw_fold(l);
  for (int oy = 0; oy < oh; ++oy) {
    const int8_t* rows[3];
    for (int k = 0; k < 3; ++k) {
      const int y = oy * stride - 1 + k;
      rows[k] = (y >= 0 && y < h) ? in + y * w * kC : nullptr;
    }
    dw_row(rows, w, stride, l, out + oy * ow * kC);
  }
  return Status::kOk;
}

Status dscnn_pointwise_portable(const int8_t* in, int n, const DscnnConv& l, int8_t* out) {
  if (in == nullptr || out == nullptr || n < 0 || !conv_ok(l)) return Status::kBadArgument;
  fold_zero_point(l);
  // Two positions x four output channels at a time: each loaded input value serves four
  // products and each loaded weight two; the 8 accumulators, 2 pointers and the 3 loaded
  // values fit the Cortex-M4's registers. Input rows are 64 bytes apart, weight rows too
  // (immediate offsets).
  int p = 0;
  for (; p + 1 < n; p += 2) {
    const int8_t* x = in + p * kC;
    int8_t* o = out + p * kC;
    for (int c = 0; c < kC; c += 4) {
      const int8_t* w = l.w + c * kC;
      int32_t a0 = g_corr[c], a1 = g_corr[c + 1], a2 = g_corr[c + 2], a3 = g_corr[c + 3];
      int32_t b0 = a0, b1 = a1, b2 = a2, b3 = a3;
      for (int j = 0; j < kC; ++j) {
        const int32_t x0 = x[j];
        const int32_t x1 = x[kC + j];
        int32_t wv = w[j];
        a0 += wv * x0;
        b0 += wv * x1;
        wv = w[kC + j];
        a1 += wv * x0;
        b1 += wv * x1;
        wv = w[2 * kC + j];
        a2 += wv * x0;
        b2 += wv * x1;
        wv = w[3 * kC + j];
        a3 += wv * x0;
        b3 += wv * x1;
      }
      const int32_t zp = l.out_zp;
      o[c] = requant_clamp(a0, l.m[c], l.sh[c], zp, zp);
      o[c + 1] = requant_clamp(a1, l.m[c + 1], l.sh[c + 1], zp, zp);
      o[c + 2] = requant_clamp(a2, l.m[c + 2], l.sh[c + 2], zp, zp);
      o[c + 3] = requant_clamp(a3, l.m[c + 3], l.sh[c + 3], zp, zp);
      o[kC + c] = requant_clamp(b0, l.m[c], l.sh[c], zp, zp);
      o[kC + c + 1] = requant_clamp(b1, l.m[c + 1], l.sh[c + 1], zp, zp);
      o[kC + c + 2] = requant_clamp(b2, l.m[c + 2], l.sh[c + 2], zp, zp);
      o[kC + c + 3] = requant_clamp(b3, l.m[c + 3], l.sh[c + 3], zp, zp);
    }
  }
  for (; p < n; ++p) {  // an odd last position
    const int8_t* x = in + p * kC;
    for (int c = 0; c < kC; ++c) {
      int32_t acc = g_corr[c];
      for (int j = 0; j < kC; ++j) acc += l.w[c * kC + j] * x[j];
      out[p * kC + c] = requant_clamp(acc, l.m[c], l.sh[c], l.out_zp, l.out_zp);
    }
  }
  return Status::kOk;
}


#if TINYFED_DSCNN_DSP

Status dscnn_pointwise(const int8_t* in, int n, const DscnnConv& l, int8_t* out) {
  if (in == nullptr || out == nullptr || n < 0 || !conv_ok(l)) return Status::kBadArgument;
  fold_zero_point(l);
  for (int p = 0; p < n; ++p) {
    const int8_t* x = in + p * kC;
    int8_t* o = out + p * kC;
    for (int c = 0; c < kC; c += 4) {
      const int8_t* w = l.w + c * kC;
      int32_t a0 = g_corr[c], a1 = g_corr[c + 1], a2 = g_corr[c + 2], a3 = g_corr[c + 3];
      for (int j = 0; j < kC; j += 8) {  // two words per iteration: half the loop overhead
        uint32_t xv = load32(x + j);
        uint32_t xe = sxtb16(xv);
        uint32_t xo = sxtb16_ror8(xv);
        pw_dsp_step(w + j, xe, xo, a0);
        pw_dsp_step(w + kC + j, xe, xo, a1);
        pw_dsp_step(w + 2 * kC + j, xe, xo, a2);
        pw_dsp_step(w + 3 * kC + j, xe, xo, a3);
        xv = load32(x + j + 4);
        xe = sxtb16(xv);
        xo = sxtb16_ror8(xv);
        pw_dsp_step(w + j + 4, xe, xo, a0);
        pw_dsp_step(w + kC + j + 4, xe, xo, a1);
        pw_dsp_step(w + 2 * kC + j + 4, xe, xo, a2);
        pw_dsp_step(w + 3 * kC + j + 4, xe, xo, a3);
      }
      const int32_t zp = l.out_zp;
      o[c] = requant_clamp(a0, l.m[c], l.sh[c], zp, zp);
      o[c + 1] = requant_clamp(a1, l.m[c + 1], l.sh[c + 1], zp, zp);
      o[c + 2] = requant_clamp(a2, l.m[c + 2], l.sh[c + 2], zp, zp);
      o[c + 3] = requant_clamp(a3, l.m[c + 3], l.sh[c + 3], zp, zp);
    }
  }
  return Status::kOk;
}
#else
Status dscnn_pointwise(const int8_t* in, int n, const DscnnConv& l, int8_t* out) {
  return dscnn_pointwise_portable(in, n, l, out);
}
#endif

Status dscnn_pool(const int8_t* in, int n, const DscnnWeights& wts, int8_t* out) {
  const DscnnConv& l = wts.pool;
  if (in == nullptr || out == nullptr || n < 1 || !requant_ok(l)) return Status::kBadArgument;
  for (int c = 0; c < kC; ++c) {
    int32_t acc = 0;
    for (int p = 0; p < n; ++p) acc += in[p * kC + c] - l.in_zp;
    out[c] = requant_clamp(acc, l.m[c], l.sh[c], l.out_zp, kInt8Min);
  }
  return Status::kOk;
}

Status dscnn_extract(const int8_t* input, const DscnnWeights& wts, int8_t* embedding,
                     DscnnWork& work, DscnnTrace* trace) {
  if (input == nullptr || embedding == nullptr) return Status::kBadArgument;
  Status s = dscnn_check(wts);
  if (!ok(s)) return s;
  // conv0 and ds1.dw together: ds1.dw's output row oy reads conv0's rows 2 oy - 1 .. 2 oy + 1,
  // so conv0 is computed row by row into a window of 3 rows (the last one moves to the top).
  dw_fold(wts.dw[0]);
  constexpr int kRow = kDscnnW0 * kC;  // one conv0 row, 1,280 bytes
  for (int oy = 0; oy < kDscnnH1; ++oy) {
    const int8_t* rows[3] = {nullptr, work.rows[1], nullptr};
    if (oy > 0) {
      memcpy(work.rows[0], work.rows[2], kRow);
      rows[0] = work.rows[0];
    }
    for (int k = 1; k < 3; ++k) {
      const int y = 2 * oy - 1 + k;
      if (y >= kDscnnH0) break;  // row 25 is padding
      conv0_row(input, wts.conv0, y, work.rows[k]);
      rows[k] = work.rows[k];
      if (trace != nullptr && trace->conv0 != nullptr) {
        memcpy(trace->conv0 + y * kRow, work.rows[k], kRow);
      }
    }
    dw_row(rows, kDscnnW0, 2, wts.dw[0], work.b + oy * kDscnnW1 * kC);
  }
  // Then every map is 13 x 10: B (depthwise) -> A (pointwise) -> B ...
  for (int i = 0; i < kDscnnBlocks; ++i) {
    if (i > 0) {
      s = dscnn_depthwise(work.a, kDscnnH1, kDscnnW1, 1, wts.dw[i], work.b);
      if (!ok(s)) return s;
    }
    if (trace != nullptr && trace->dw[i] != nullptr) memcpy(trace->dw[i], work.b, kDscnnBufB);
    s = dscnn_pointwise(work.b, kDscnnPositions, wts.pw[i], work.a);
    if (!ok(s)) return s;
    if (trace != nullptr && trace->pw[i] != nullptr) memcpy(trace->pw[i], work.a, kDscnnBufB);
  }
  return dscnn_pool(work.a, kDscnnPositions, wts, embedding);
}

Status dscnn_embedding_float(const int8_t* q, const DscnnWeights& wts, float* e) {
  if (q == nullptr || e == nullptr || wts.a == nullptr || wts.b == nullptr) {
    return Status::kBadArgument;
  }
  for (int c = 0; c < kC; ++c) e[c] = wts.a[c] * static_cast<float>(q[c]) + wts.b[c];
  return Status::kOk;
}

}  // namespace tinyfed
