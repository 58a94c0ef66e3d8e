// The dscnn family's frozen int8 feature extractor (docs/learning.md section 2): a
// depthwise-separable CNN that turns the logmel40 input (50 x 40 int8) into a 64-value int8
// embedding, bit-exact with the Python reference tinyfed/model/dscnn/ (shared vectors in
// vectors/dscnn/, checked by tests/test_dscnn.cpp).
//
// NHWC int8 activations with a zero point, int8 weights symmetric per output channel, int32
// biases and accumulators; every conv is followed by ReLU (the clamp to [out_zp, 127]); the
// only rounding rule is dscnn_requant(). The weights come in a DscnnWeights of const pointers,
// so the same code runs the vectors' random model in the tests and the released weights
// (the generated dscnn_weights.{h,cpp}) on the board.
//
// Memory, static inside dscnn.cpp: conv0 is never stored whole (32,000 bytes): it is computed
// row by row into a 3-row window that ds1.dw consumes (kDscnnConv0Rows = 3,840), then two
// ping-pong 13 x 10 x 64 maps (kDscnnBufA + kDscnnBufB = 16,640), plus 832 bytes of
// per-channel constants and a border window: 21,312 bytes. Nothing on the heap, ~100 bytes of
// stack.
#pragma once

#include <stdint.h>

#include "status.h"

#if defined(__ARM_FEATURE_DSP) && defined(__GNUC__)
#define TINYFED_DSCNN_DSP 1
#else
#define TINYFED_DSCNN_DSP 0
#endif

namespace tinyfed {

// The extractor's shapes (docs/learning.md section 2, the layer table).
constexpr int kDscnnInH = 50;       // 50 frames (time), logmel40's layout
constexpr int kDscnnInW = 40;       // 40 mel bands (frequency)
constexpr int kDscnnInput = kDscnnInH * kDscnnInW;  // 2,000 int8 values, C = 1
constexpr int kDscnnChannels = 64;  // every layer has 64 channels
constexpr int kDscnnH0 = 25;        // conv0 3x3 stride 2 pad 1: (50 + 2 - 3) / 2 + 1
constexpr int kDscnnW0 = 20;        // (40 + 2 - 3) / 2 + 1
constexpr int kDscnnH1 = 13;        // ds1.dw 3x3 stride 2 pad 1: (25 + 2 - 3) / 2 + 1
constexpr int kDscnnW1 = 10;        // (20 + 2 - 3) / 2 + 1
constexpr int kDscnnPositions = kDscnnH1 * kDscnnW1;  // 130, averaged by the pool
constexpr int kDscnnBlocks = 4;     // ds1..ds4
constexpr int kDscnnTaps = 9;       // 3x3 kernels
constexpr int kDscnnEmbedding = kDscnnChannels;  // 64 values for the head
constexpr int kDscnnConv0Out = kDscnnH0 * kDscnnW0 * kDscnnChannels;  // 32,000 (not stored)
constexpr int kDscnnBufA = kDscnnPositions * kDscnnChannels;  // 8,320: pointwise outputs
constexpr int kDscnnBufB = kDscnnPositions * kDscnnChannels;  // 8,320: depthwise outputs
constexpr int kDscnnConv0Rows = 3 * kDscnnW0 * kDscnnChannels;  // 3,840: conv0 rows for ds1.dw
// About 2.7 M multiply-accumulates per utterance (docs/learning.md): conv0 288,000, the four
// depthwise 299,520, the four pointwise 2,129,920.

// One quantised conv layer (conv0, a depthwise or a pointwise). Weight layouts, row-major:
//   conv0      w[64][3][3]   (output channel, kernel row = time, kernel column = frequency)
//   depthwise  w[64][3][3]   (channel, kernel row, kernel column)
//   pointwise  w[64][64]     (output channel, input channel)
// bias, m, sh: one per output channel. Requant: out = clamp(out_zp + requant(acc, m[c], sh[c]),
// out_zp, 127), acc = bias[c] + sum w * (x - in_zp).
struct DscnnConv {
  const int8_t* w;
  const int32_t* bias;
  const int32_t* m;   // multipliers in [2^30, 2^31)
  const int8_t* sh;   // shifts in [1, 62]
  int32_t in_zp;
  int32_t out_zp;
};

// The whole extractor. pool: acc = sum over the 130 positions of (q - pool.in_zp) per channel,
// out = clamp(pool.out_zp + requant(acc, pool.m[c], pool.sh[c]), -128, 127) (pool.w and
// pool.bias are not read; the model file stores one multiplier per channel, all equal).
// a, b: the embedding's float fold, e[c] = a[c] * q[c] + b[c].
struct DscnnWeights {
  DscnnConv conv0;
  DscnnConv dw[kDscnnBlocks];
  DscnnConv pw[kDscnnBlocks];
  DscnnConv pool;
  const float* a;  // [64]
  const float* b;  // [64]
};

// The DscnnWeights of a generated weight file (dscnn_weights.h: `Layer kLayer[10]` in the order
// conv0, ds1.dw, ds1.pw, ..., ds4.pw, pool, each with weights, bias, m, sh, in_zp, out_zp).
template <typename Layer>
DscnnWeights dscnn_weights_from(const Layer* layers, const float* a, const float* b) {
  DscnnWeights w{};
  const auto conv = [](const Layer& l) {
    return DscnnConv{l.weights, l.bias, l.m, l.sh, l.in_zp, l.out_zp};
  };
  w.conv0 = conv(layers[0]);
  for (int i = 0; i < kDscnnBlocks; ++i) {
    w.dw[i] = conv(layers[1 + 2 * i]);
    w.pw[i] = conv(layers[2 + 2 * i]);
  }
  w.pool = conv(layers[1 + 2 * kDscnnBlocks]);
  w.a = a;
  w.b = b;
  return w;
}

// Optional record of every layer's output (tests): each pointer may be null; NHWC int8.
struct DscnnTrace {
  int8_t* conv0;                // [25][20][64] (kDscnnConv0Out)
  int8_t* dw[kDscnnBlocks];     // [13][10][64]
  int8_t* pw[kDscnnBlocks];     // [13][10][64]
};

// The spec's rounding rule: (acc * m + 2^(sh-1)) >> sh, int64 product, arithmetic shift
// (rounds half up). Requires sh in [1, 62]; the result must fit int32 (the kernels saturate
// it first).
inline int32_t dscnn_requant(int32_t acc, int32_t m, int sh) {
  const int64_t p = static_cast<int64_t>(acc) * static_cast<int64_t>(m);
  return static_cast<int32_t>((p + (static_cast<int64_t>(1) << (sh - 1))) >> sh);
}

// Checks a weight set: non-null pointers, m in [2^30, 2^31), sh in [1, 62], zero points in
// [-128, 127]. Errors: kBadArgument.
Status dscnn_check(const DscnnWeights& wts);

// ---- The kernels (public for the layer-by-layer tests) -----------------------------------

// conv0: in[50][40] (C = 1) -> out[25][20][64], 3x3, stride 2, pad 1.
Status dscnn_conv0(const int8_t* in, const DscnnConv& layer, int8_t* out);

// Depthwise 3x3, pad 1, stride 1 or 2: in[h][w][64] -> out[oh][ow][64],
// oh = (h - 1) / stride + 1, ow likewise.
Status dscnn_depthwise(const int8_t* in, int h, int w, int stride, const DscnnConv& layer,
                       int8_t* out);

// Pointwise 1x1 64 -> 64 over n positions: in[n][64] -> out[n][64]; in and out must not
// overlap. On a core with the ARMv7E-M DSP instructions (the Cortex-M4) it uses SMLAD (inline
// assembly, TINYFED_DSCNN_DSP = 1); elsewhere it is dscnn_pointwise_portable, plain C++.
// Both give the same bytes (tests/ check the portable one, bench/ compares the two on QEMU).
Status dscnn_pointwise(const int8_t* in, int n, const DscnnConv& layer, int8_t* out);
Status dscnn_pointwise_portable(const int8_t* in, int n, const DscnnConv& layer, int8_t* out);

// Average pool over n positions: in[n][64] -> out[64].
Status dscnn_pool(const int8_t* in, int n, const DscnnWeights& wts, int8_t* out);

// ---- The whole extractor -----------------------------------------------------------------

// The extractor's activations (20,480 bytes): the caller owns them, so a board that runs one
// model family at a time can lend it memory the other family would use (core/device.h).
struct DscnnWork {
  alignas(4) int8_t a[kDscnnBufA];                         // pointwise outputs
  alignas(4) int8_t b[kDscnnBufB];                         // depthwise outputs
  alignas(4) int8_t rows[3][kDscnnW0 * kDscnnChannels];    // conv0's rows for ds1.dw (3,840)
};

// input[50][40] int8 -> embedding[64] int8, in `work` (not reentrant for one work). Errors:
// kBadArgument (null pointer or dscnn_check fails).
Status dscnn_extract(const int8_t* input, const DscnnWeights& wts, int8_t* embedding,
                     DscnnWork& work, DscnnTrace* trace = nullptr);

// The head's input: e[c] = a[c] * q[c] + b[c] in float32 (two roundings, no fused multiply-add).
Status dscnn_embedding_float(const int8_t* q, const DscnnWeights& wts, float* e);

}  // namespace tinyfed
