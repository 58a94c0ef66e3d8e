// Checks the dscnn family's firmware (core/logmel.*, core/dscnn.*, core/head.*):
//  * hand-made cases of the rounding rule, the augmentation and the Fisher-Yates order;
//  * the optimised int8 kernels against plain textbook loops on random weights (borders,
//    both strides, zero points);
//  * the shared vectors of the Python reference (vectors/dscnn/, see its README.md): logmel
//    within tolerance, the int8 path bit-exact layer by layer, the head after each record().
// Usage: test_dscnn VECTORS_DIR; exit code 0 on success.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "dscnn.h"
#include "head.h"

using tinyfed::DscnnConv;
using tinyfed::DscnnWeights;
using tinyfed_test::check;

namespace {

constexpr int kC = tinyfed::kDscnnChannels;

// ---- a random weight set (its own xorshift32 stream) ---------------------------------------

struct RandomModel {
  int8_t w0[kC * 9];
  int8_t wd[tinyfed::kDscnnBlocks][kC * 9];
  int8_t wp[tinyfed::kDscnnBlocks][kC * kC];
  int32_t bias[1 + 2 * tinyfed::kDscnnBlocks][kC];
  int32_t m[1 + 2 * tinyfed::kDscnnBlocks][kC];
  int8_t sh[1 + 2 * tinyfed::kDscnnBlocks][kC];
  float a[kC];
  float b[kC];
  DscnnWeights wts;
};

uint32_t g_rng = 12345u;
int32_t rnd(int32_t lo, int32_t hi) {  // uniform-ish in [lo, hi]
  g_rng = tinyfed::xorshift32(g_rng);
  return lo + static_cast<int32_t>(g_rng % static_cast<uint32_t>(hi - lo + 1));
}

void fill_conv(RandomModel& r, int idx, int8_t* w, int n, DscnnConv& l, int32_t in_zp) {
  for (int i = 0; i < n; ++i) w[i] = static_cast<int8_t>(rnd(-127, 127));
  for (int c = 0; c < kC; ++c) {
    r.bias[idx][c] = rnd(-5000, 5000);
    r.m[idx][c] = rnd(0x40000000, 0x7fffffff);
    // Small shifts (< 32) and large ones: both paths of the requantisation.
    r.sh[idx][c] = static_cast<int8_t>(c % 7 == 0 ? rnd(20, 33) : rnd(33, 44));
  }
  l = DscnnConv{w, r.bias[idx], r.m[idx], r.sh[idx], in_zp, static_cast<int32_t>(rnd(-128, -100))};
}

void make_model(RandomModel& r) {
  fill_conv(r, 0, r.w0, kC * 9, r.wts.conv0, 0);
  int32_t zp = r.wts.conv0.out_zp;
  for (int i = 0; i < tinyfed::kDscnnBlocks; ++i) {
    fill_conv(r, 1 + 2 * i, r.wd[i], kC * 9, r.wts.dw[i], zp);
    fill_conv(r, 2 + 2 * i, r.wp[i], kC * kC, r.wts.pw[i], r.wts.dw[i].out_zp);
    zp = r.wts.pw[i].out_zp;
  }
  r.wts.pool_m = rnd(0x40000000, 0x7fffffff);
  r.wts.pool_sh = 38;
  r.wts.pool_in_zp = zp;
  r.wts.pool_out_zp = -128;
  for (int c = 0; c < kC; ++c) {
    r.a[c] = 0.01f * static_cast<float>(rnd(1, 100));
    r.b[c] = 0.01f * static_cast<float>(rnd(-100, 100));
  }
  r.wts.a = r.a;
  r.wts.b = r.b;
}

// ---- plain textbook loops (no zero-point folding, no unrolling, no fast paths) -------------

int8_t ref_out(int64_t acc, int32_t m, int sh, int32_t zp, int32_t lo) {
  const int64_t r = (acc * m + (int64_t{1} << (sh - 1))) >> sh;
  int64_t v = zp + r;
  if (v < lo) v = lo;
  if (v > 127) v = 127;
  return static_cast<int8_t>(v);
}

// Generic 3x3 conv, pad 1: in[h][w][cin] -> out[oh][ow][64]; depthwise when cin == 64 && dw.
void ref_conv3(const int8_t* in, int h, int w, int cin, bool dw, int stride, const DscnnConv& l,
               int8_t* out) {
  const int oh = (h - 1) / stride + 1;
  const int ow = (w - 1) / stride + 1;
  for (int oy = 0; oy < oh; ++oy) {
    for (int ox = 0; ox < ow; ++ox) {
      for (int c = 0; c < kC; ++c) {
        int64_t acc = l.bias[c];
        for (int ky = 0; ky < 3; ++ky) {
          for (int kx = 0; kx < 3; ++kx) {
            const int iy = oy * stride - 1 + ky;
            const int ix = ox * stride - 1 + kx;
            const int ci = dw ? c : 0;
            const int32_t x = (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                  ? l.in_zp
                                  : in[(iy * w + ix) * cin + ci];
            acc += l.w[c * 9 + ky * 3 + kx] * (x - l.in_zp);
          }
        }
        out[(oy * ow + ox) * kC + c] = ref_out(acc, l.m[c], l.sh[c], l.out_zp, l.out_zp);
      }
    }
  }
}

void ref_pointwise(const int8_t* in, int n, const DscnnConv& l, int8_t* out) {
  for (int p = 0; p < n; ++p) {
    for (int c = 0; c < kC; ++c) {
      int64_t acc = l.bias[c];
      for (int j = 0; j < kC; ++j) acc += l.w[c * kC + j] * (in[p * kC + j] - l.in_zp);
      out[p * kC + c] = ref_out(acc, l.m[c], l.sh[c], l.out_zp, l.out_zp);
    }
  }
}

void check_requant() {
  using tinyfed::dscnn_requant;
  constexpr int32_t kHalf = 0x40000000;  // m / 2^31 = 0.5
  check(dscnn_requant(3, kHalf, 31) == 2, "requant", "1.5 rounds half up to 2");
  check(dscnn_requant(-3, kHalf, 31) == -1, "requant", "-1.5 rounds half up to -1");
  check(dscnn_requant(5, kHalf, 32) == 1, "requant", "1.25 -> 1");
  check(dscnn_requant(-5, kHalf, 32) == -1, "requant", "-1.25 -> -1");
  check(dscnn_requant(2147483647, 0x7fffffff, 62) == 1, "requant", "int64 product, no overflow");
}

void check_kernels() {
  static RandomModel r;
  make_model(r);
  static int8_t input[tinyfed::kDscnnInput];
  for (int8_t& v : input) v = static_cast<int8_t>(rnd(-128, 127));
  static int8_t got[tinyfed::kDscnnBufA];
  static int8_t want[tinyfed::kDscnnBufA];
  static int8_t map0[tinyfed::kDscnnBufA];
  check(tinyfed::ok(tinyfed::dscnn_conv0(input, r.wts.conv0, map0)), "kernels", "conv0 runs");
  ref_conv3(input, 50, 40, 1, false, 2, r.wts.conv0, want);
  check(memcmp(map0, want, tinyfed::kDscnnBufA) == 0, "kernels", "conv0 = textbook loops");
  // Depthwise stride 2 on the 25 x 20 map, then stride 1 on a random 13 x 10 map whose zero
  // point is not the minimum (so padding and real values differ).
  check(tinyfed::ok(tinyfed::dscnn_depthwise(map0, 25, 20, 2, r.wts.dw[0], got)), "kernels",
        "depthwise stride 2 runs");
  ref_conv3(map0, 25, 20, kC, true, 2, r.wts.dw[0], want);
  check(memcmp(got, want, tinyfed::kDscnnBufB) == 0, "kernels", "depthwise stride 2 = textbook");
  static int8_t map1[tinyfed::kDscnnBufB];
  for (int8_t& v : map1) v = static_cast<int8_t>(rnd(-128, 127));
  DscnnConv dw = r.wts.dw[1];
  dw.in_zp = 17;
  check(tinyfed::ok(tinyfed::dscnn_depthwise(map1, 13, 10, 1, dw, got)), "kernels",
        "depthwise stride 1 runs");
  ref_conv3(map1, 13, 10, kC, true, 1, dw, want);
  check(memcmp(got, want, tinyfed::kDscnnBufB) == 0, "kernels", "depthwise stride 1 = textbook");
  DscnnConv pw = r.wts.pw[2];
  pw.in_zp = -37;
  check(tinyfed::ok(tinyfed::dscnn_pointwise(map1, 130, pw, got)), "kernels", "pointwise runs");
  ref_pointwise(map1, 130, pw, want);
  check(memcmp(got, want, tinyfed::kDscnnBufB) == 0, "kernels", "pointwise = textbook");
  int8_t pooled[kC];
  check(tinyfed::ok(tinyfed::dscnn_pool(map1, 130, r.wts, pooled)), "kernels", "pool runs");
  bool pool_ok = true;
  for (int c = 0; c < kC; ++c) {
    int64_t acc = 0;
    for (int p = 0; p < 130; ++p) acc += map1[p * kC + c] - r.wts.pool_in_zp;
    pool_ok = pool_ok && pooled[c] == ref_out(acc, r.wts.pool_m, r.wts.pool_sh,
                                              r.wts.pool_out_zp, -128);
  }
  check(pool_ok, "kernels", "pool = textbook");
  // The whole extractor = the layers chained by hand.
  int8_t emb[kC];
  static int8_t dwt[tinyfed::kDscnnBlocks][tinyfed::kDscnnBufB];
  static int8_t pwt[tinyfed::kDscnnBlocks][tinyfed::kDscnnBufB];
  static int8_t c0t[tinyfed::kDscnnBufA];
  tinyfed::DscnnTrace tr{c0t, {dwt[0], dwt[1], dwt[2], dwt[3]}, {pwt[0], pwt[1], pwt[2], pwt[3]}};
  check(tinyfed::ok(tinyfed::dscnn_extract(input, r.wts, emb, &tr)), "extract", "runs");
  bool chain = memcmp(c0t, map0, tinyfed::kDscnnBufA) == 0;
  ref_conv3(map0, 25, 20, kC, true, 2, r.wts.dw[0], want);
  chain = chain && memcmp(dwt[0], want, tinyfed::kDscnnBufB) == 0;
  for (int i = 0; i < tinyfed::kDscnnBlocks; ++i) {
    if (i > 0) {
      ref_conv3(pwt[i - 1], 13, 10, kC, true, 1, r.wts.dw[i], want);
      chain = chain && memcmp(dwt[i], want, tinyfed::kDscnnBufB) == 0;
    }
    ref_pointwise(dwt[i], 130, r.wts.pw[i], want);
    chain = chain && memcmp(pwt[i], want, tinyfed::kDscnnBufB) == 0;
  }
  tinyfed::dscnn_pool(pwt[3], 130, r.wts, pooled);
  chain = chain && memcmp(pooled, emb, kC) == 0;
  check(chain, "extract", "every layer = textbook loops on the previous one");
  // Bad weights are refused by name of the rule, not run.
  RandomModel bad = r;
  bad.m[3][5] = 0x3fffffff;
  bad.wts.dw[0].m = bad.m[3];  // rebind to the copy's arrays
  check(tinyfed::dscnn_extract(input, bad.wts, emb) == tinyfed::Status::kBadArgument, "extract",
        "a multiplier below 2^30 is refused");
}

void check_head_hand() {
  static int8_t in[tinyfed::kDscnnInput];
  static int8_t out[tinyfed::kDscnnInput];
  for (int i = 0; i < tinyfed::kDscnnInput; ++i) in[i] = static_cast<int8_t>(i / 40 - 25 + i % 3);
  tinyfed::head_augment(in, 1, out);
  bool ok1 = memcmp(out, in + 3 * 40, 47 * 40) == 0;
  for (int t = 47; t < 50; ++t) ok1 = ok1 && memcmp(out + t * 40, in + 49 * 40, 40) == 0;
  check(ok1, "augment", "copy 1: frame t <- t + 3, last frame repeated");
  tinyfed::head_augment(in, 2, out);
  bool ok2 = memcmp(out + 3 * 40, in, 47 * 40) == 0;
  for (int t = 0; t < 3; ++t) ok2 = ok2 && memcmp(out + t * 40, in, 40) == 0;
  check(ok2, "augment", "copy 2: frame t <- t - 3, first frame repeated");
  // xorshift32 from 3: 811107 (n = -8), 201886211 (-8), 3025432647 (+3), computed by hand.
  in[0] = -125;
  in[1] = 0;
  in[2] = 125;
  tinyfed::head_augment(in, 3, out);
  check(out[0] == -128 && out[1] == -8 && out[2] == 127, "augment",
        "copy 3: xorshift32 noise from seed 3, saturated");
  uint16_t order[5];
  tinyfed::head_shuffle(order, 5, 0x9E3779B9u ^ 1u);
  const uint16_t want[5] = {1, 0, 4, 3, 2};
  check(memcmp(order, want, sizeof want) == 0, "order", "Fisher-Yates of 5, seed 0x9E3779B9^1");
  // One step from zeros: p = 1/K, W[k] -= lr (1/K - [k == y]) e.
  float params[3 * 65] = {};
  float e[64];
  for (int j = 0; j < 64; ++j) e[j] = 0.5f * static_cast<float>(j % 5) - 1.0f;
  float loss = 0.0f;
  tinyfed::head_step(params, 3, e, 1, 0.3f, &loss);
  check(fabsf(loss - logf(3.0f)) < 1e-6f, "head", "first loss = ln 3");
  check(fabsf(params[64 + 7] - 0.3f * (2.0f / 3.0f) * e[7]) < 1e-7f &&
            fabsf(params[7] + 0.3f * (1.0f / 3.0f) * e[7]) < 1e-7f &&
            fabsf(params[192 + 1] - 0.2f) < 1e-7f,
        "head", "first step from zeros");
  check(tinyfed::head_step(params, 3, e, 3, 0.3f, &loss) == tinyfed::Status::kBadArgument,
        "head", "label >= K refused");
  static tinyfed::Head head;
  check(tinyfed::head_init(head, 1) == tinyfed::Status::kBadArgument, "head", "K = 1 refused");
  tinyfed::head_init(head, 3);
  int8_t emb[64] = {};
  for (int i = 0; i < tinyfed::kHeadStoreSize + 7; ++i) {
    emb[0] = static_cast<int8_t>(i % 128);
    tinyfed::head_store_add(head, emb, static_cast<uint8_t>(i % 3));
  }
  check(head.count == 320 && head.next == 7 && head.store[6][0] == (326 % 128) &&
            head.store[7][0] == 7,
        "store", "ring of 320: the oldest overwritten");
}

}  // namespace

int main(int argc, char** argv) {
  const char* dir = argc > 1 ? argv[1] : "../vectors";
  (void)dir;
  check_requant();
  check_kernels();
  check_head_hand();
  printf("%d checks, %d failed\n", tinyfed_test::g_checks, tinyfed_test::g_failures);
  return tinyfed_test::g_failures == 0 ? 0 : 1;
}
