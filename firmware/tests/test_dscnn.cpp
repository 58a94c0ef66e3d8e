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
#include "dscnn_weights.h"  // the vectors' model: vectors/dscnn/fw/ (Makefile)
#include "head.h"
#include "logmel.h"
#include "logmel_table.h"

// The caller-owned work memory of the extractor and of logmel40 (static, as on a board).
static tinyfed::DscnnWork g_work;
static tinyfed::LogmelWork g_logmel;

using tinyfed::DscnnConv;
using tinyfed::DscnnWeights;
using tinyfed::Status;
using tinyfed_test::check;

namespace {

constexpr int kC = tinyfed::kDscnnChannels;

// ---- a random weight set (its own xorshift32 stream) ---------------------------------------

struct RandomModel {
  int8_t w0[kC * 9];
  int8_t wd[tinyfed::kDscnnBlocks][kC * 9];
  int8_t wp[tinyfed::kDscnnBlocks][kC * kC];
  int32_t bias[2 + 2 * tinyfed::kDscnnBlocks][kC];
  int32_t m[2 + 2 * tinyfed::kDscnnBlocks][kC];
  int8_t sh[2 + 2 * tinyfed::kDscnnBlocks][kC];
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
  fill_conv(r, 9, r.w0, 0, r.wts.pool, zp);
  r.wts.pool.out_zp = -128;
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
  // Through a layer: a bias of 2^31 - 1 with shift 1 (a value far beyond int32 after the
  // multiplier) saturates at 127, and -2^31 at the zero point (ReLU).
  int8_t w0[kC * 9] = {};
  int32_t bias[kC], m[kC];
  int8_t sh[kC];
  for (int c = 0; c < kC; ++c) {
    bias[c] = c % 2 == 0 ? 2147483647 : -2147483647 - 1;
    m[c] = 0x7fffffff;
    sh[c] = 1;
  }
  const DscnnConv huge{w0, bias, m, sh, 0, -5};
  static int8_t in[tinyfed::kDscnnInput] = {};
  static int8_t out[tinyfed::kDscnnConv0Out];
  tinyfed::dscnn_conv0(in, huge, out);
  check(out[0] == 127 && out[1] == -5, "requant", "results beyond int32 saturate correctly");
}

void check_kernels() {
  static RandomModel r;
  make_model(r);
  static int8_t input[tinyfed::kDscnnInput];
  for (int8_t& v : input) v = static_cast<int8_t>(rnd(-128, 127));
  static int8_t got[tinyfed::kDscnnConv0Out];
  static int8_t want[tinyfed::kDscnnConv0Out];
  static int8_t map0[tinyfed::kDscnnConv0Out];
  check(tinyfed::ok(tinyfed::dscnn_conv0(input, r.wts.conv0, map0)), "kernels", "conv0 runs");
  ref_conv3(input, 50, 40, 1, false, 2, r.wts.conv0, want);
  check(memcmp(map0, want, tinyfed::kDscnnConv0Out) == 0, "kernels", "conv0 = textbook loops");
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
    const DscnnConv& l = r.wts.pool;
    for (int p = 0; p < 130; ++p) acc += map1[p * kC + c] - l.in_zp;
    pool_ok = pool_ok && pooled[c] == ref_out(acc, l.m[c], l.sh[c], l.out_zp, -128);
  }
  check(pool_ok, "kernels", "pool = textbook");
  // The whole extractor = the layers chained by hand.
  int8_t emb[kC];
  static int8_t dwt[tinyfed::kDscnnBlocks][tinyfed::kDscnnBufB];
  static int8_t pwt[tinyfed::kDscnnBlocks][tinyfed::kDscnnBufB];
  static int8_t c0t[tinyfed::kDscnnConv0Out];
  tinyfed::DscnnTrace tr{c0t, {dwt[0], dwt[1], dwt[2], dwt[3]}, {pwt[0], pwt[1], pwt[2], pwt[3]}};
  check(tinyfed::ok(tinyfed::dscnn_extract(input, r.wts, emb, g_work, &tr)), "extract", "runs");
  bool chain = memcmp(c0t, map0, tinyfed::kDscnnConv0Out) == 0;
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
  check(tinyfed::dscnn_extract(input, bad.wts, emb, g_work) == tinyfed::Status::kBadArgument, "extract",
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


// ---- the shared vectors (vectors/dscnn/README.md) -------------------------------------------

const char* g_dir = "../vectors";

// Reads exactly `count` values of `size` bytes from dscnn/NAME (little-endian, like the host).
bool load(const char* name, void* out, size_t size, size_t count) {
  char path[512];
  snprintf(path, sizeof path, "%s/dscnn/%s", g_dir, name);
  FILE* f = fopen(path, "rb");
  if (f == nullptr) {
    printf("cannot open %s\n", path);
    return false;
  }
  const size_t got = fread(out, size, count, f);
  const bool at_end = fgetc(f) == EOF;
  fclose(f);
  if (got != count || !at_end) {
    printf("%s: expected exactly %zu values of %zu bytes\n", path, count, size);
  }
  return got == count && at_end;
}

constexpr int kN = 8;    // README: N = 8 embedding inputs
constexpr int kR = 70;   // README: R = 70 recordings
constexpr int kK = 3;    // README: K = 3 classes
constexpr float kLr = 0.01f;  // README: learning rate 0.01
constexpr float kHeadTol = 1e-5f;  // spec: the head within 1e-5
// logmel float stages: the largest differences measured are 6.0e-5 (log) and 1.7e-5
// (normalised), from the FFT's last bits in near-silent bins; 3x / 6x margin.
constexpr float kLogTol = 2e-4f;
constexpr float kNormTol = 1e-4f;
constexpr double kInputOffByOneMax = 0.005;  // spec: at most 0.5 % of int8 inputs off by 1

tinyfed::DscnnWeights vector_model() {
  namespace dw = tinyfed::dscnn_weights;
  return tinyfed::dscnn_weights_from(dw::kLayer, dw::kEmbedA, dw::kEmbedB);
}

float max_abs_diff(const float* a, const float* b, int n) {
  float m = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float d = fabsf(a[i] - b[i]);
    if (!(d <= m)) m = d;  // NaN counts as the largest
  }
  return m;
}

void check_logmel_vectors() {
  static float table[40 * 129];
  if (!load("mel_table.f32", table, 4, 40 * 129)) {
    check(false, "logmel", "mel_table.f32 readable");
    return;
  }
  check(memcmp(table, tinyfed::logmel_table::kMelWeights, sizeof table) == 0, "logmel",
        "logmel_table.h = mel_table.f32 bit for bit");
  char path[512];
  snprintf(path, sizeof path, "%s/dscnn/clips.txt", g_dir);
  FILE* f = fopen(path, "r");
  check(f != nullptr, "logmel", "clips.txt readable");
  if (f == nullptr) return;
  char name[128];
  int clips = 0;
  while (fscanf(f, "%127s", name) == 1) {
    ++clips;
    char file[256];
    static int16_t audio[16000];
    static float want_log[2000], want_norm[2000], got_log[2000], got_norm[2000];
    static int8_t want_q[2000], got_q[2000];
    snprintf(file, sizeof file, "%s.i16", name);
    bool ok = load(file, audio, 2, 16000);
    snprintf(file, sizeof file, "%s_log.f32", name);
    ok = ok && load(file, want_log, 4, 2000);
    snprintf(file, sizeof file, "%s_logmel.f32", name);
    ok = ok && load(file, want_norm, 4, 2000);
    snprintf(file, sizeof file, "%s_input.i8", name);
    ok = ok && load(file, want_q, 1, 2000);
    tinyfed::LogmelTrace tr{nullptr, got_log, got_norm};
    ok = ok && tinyfed::ok(tinyfed::logmel40_compute(audio, got_q, g_logmel, &tr));
    char label[200];
    snprintf(label, sizeof label, "%s: runs", name);
    check(ok, "logmel", label);
    if (!ok) continue;
    const float d_log = max_abs_diff(got_log, want_log, 2000);
    const float d_norm = max_abs_diff(got_norm, want_norm, 2000);
    int off1 = 0, off_more = 0;
    for (int i = 0; i < 2000; ++i) {
      const int d = got_q[i] - want_q[i];
      if (d == 1 || d == -1) ++off1;
      if (d > 1 || d < -1) ++off_more;
    }
    printf("       %s: log max |diff| %.3g, normalised %.3g, int8 off by 1: %d of 2000\n", name,
           static_cast<double>(d_log), static_cast<double>(d_norm), off1);
    snprintf(label, sizeof label, "%s: log within %g", name, static_cast<double>(kLogTol));
    check(d_log <= kLogTol, "logmel", label);
    snprintf(label, sizeof label, "%s: normalised within %g", name, static_cast<double>(kNormTol));
    check(d_norm <= kNormTol, "logmel", label);
    snprintf(label, sizeof label, "%s: int8 input, <= 0.5 %% off by 1, none by more", name);
    check(off_more == 0 && off1 <= static_cast<int>(kInputOffByOneMax * 2000), "logmel", label);
  }
  fclose(f);
  check(clips == 4, "logmel", "4 clips in clips.txt");
}

void check_extractor_vectors() {
  const tinyfed::DscnnWeights wts = vector_model();
  check(tinyfed::ok(tinyfed::dscnn_check(wts)), "vectors", "the vectors' model is valid");
  static int8_t in[2][2000], conv0[2][25 * 20 * 64], dw[4][2][8320], pw[4][2][8320], pool[2][64];
  bool ok = load("layers_in.i8", in, 1, sizeof in) &&
            load("layers_conv0.i8", conv0, 1, sizeof conv0) &&
            load("layers_pool.i8", pool, 1, sizeof pool);
  for (int i = 0; i < 4 && ok; ++i) {
    char file[64];
    snprintf(file, sizeof file, "layers_ds%d_dw.i8", i + 1);
    ok = load(file, dw[i], 1, sizeof dw[i]);
    snprintf(file, sizeof file, "layers_ds%d_pw.i8", i + 1);
    ok = ok && load(file, pw[i], 1, sizeof pw[i]);
  }
  check(ok, "vectors", "layer files readable");
  if (!ok) return;
  for (int v = 0; v < 2; ++v) {
    static int8_t c0[25 * 20 * 64], gd[4][8320], gp[4][8320];
    int8_t emb[64];
    tinyfed::DscnnTrace tr{c0, {gd[0], gd[1], gd[2], gd[3]}, {gp[0], gp[1], gp[2], gp[3]}};
    check(tinyfed::ok(tinyfed::dscnn_extract(in[v], wts, emb, g_work, &tr)), "vectors", "extract runs");
    char label[96];
    snprintf(label, sizeof label, "input %d: conv0 bit-exact", v);
    check(memcmp(c0, conv0[v], sizeof c0) == 0, "vectors", label);
    for (int i = 0; i < 4; ++i) {
      snprintf(label, sizeof label, "input %d: ds%d.dw bit-exact", v, i + 1);
      check(memcmp(gd[i], dw[i][v], 8320) == 0, "vectors", label);
      snprintf(label, sizeof label, "input %d: ds%d.pw bit-exact", v, i + 1);
      check(memcmp(gp[i], pw[i][v], 8320) == 0, "vectors", label);
    }
    snprintf(label, sizeof label, "input %d: pool (the embedding) bit-exact", v);
    check(memcmp(emb, pool[v], 64) == 0, "vectors", label);
  }
  static int8_t ein[kN][2000], eq[kN][64];
  static float ef[kN][64];
  ok = load("embed_in.i8", ein, 1, sizeof ein) && load("embed_q.i8", eq, 1, sizeof eq) &&
       load("embed.f32", ef, 4, kN * 64);
  check(ok, "vectors", "embedding files readable");
  if (!ok) return;
  bool q_ok = true, f_ok = true;
  for (int n = 0; n < kN; ++n) {
    int8_t q[64];
    float e[64];
    q_ok = q_ok && tinyfed::ok(tinyfed::dscnn_extract(ein[n], wts, q, g_work)) && memcmp(q, eq[n], 64) == 0;
    f_ok = f_ok && tinyfed::ok(tinyfed::dscnn_embedding_float(eq[n], wts, e)) &&
           memcmp(e, ef[n], sizeof e) == 0;
  }
  check(q_ok, "vectors", "8 int8 embeddings bit-exact");
  check(f_ok, "vectors", "8 float embeddings a q + b bit-exact");
}

void check_head_vectors() {
  const tinyfed::DscnnWeights wts = vector_model();
  uint32_t states[16];
  bool ok = load("xorshift_seed1.u32", states, 4, 16);
  uint32_t x = 1u;
  for (int i = 0; i < 16 && ok; ++i) {
    x = tinyfed::xorshift32(x);
    ok = x == states[i];
  }
  check(ok, "vectors", "xorshift32: 16 states from 1");
  static int8_t ain[2][2000], aug[2][4][2000];
  ok = load("augment_in.i8", ain, 1, sizeof ain) && load("augment.i8", aug, 1, sizeof aug);
  for (int v = 0; v < 2 && ok; ++v) {
    for (int c = 0; c < 4 && ok; ++c) {
      int8_t out[2000];
      ok = tinyfed::ok(tinyfed::head_augment(ain[v], c + 1, out)) &&
           memcmp(out, aug[v][c], 2000) == 0;
    }
  }
  check(ok, "vectors", "the 4 augmented copies of 2 inputs exact");

  static int8_t ein[kN][2000];
  static int32_t idx[kR], labels[kR], order_len[kR], order[kR * 320], store_labels[320], decide[kN];
  static float params[kR][kK * 65], loss[kR], probs[kN][kK];
  static int8_t store_q[320][64];
  ok = load("embed_in.i8", ein, 1, sizeof ein) && load("head_input_index.i32", idx, 4, kR) &&
       load("head_labels.i32", labels, 4, kR) && load("head_params.f32", params, 4, kR * kK * 65) &&
       load("head_loss.f32", loss, 4, kR) && load("head_order_len.i32", order_len, 4, kR) &&
       load("head_store_q.i8", store_q, 1, sizeof store_q) &&
       load("head_store_labels.i32", store_labels, 4, 320) &&
       load("head_probs.f32", probs, 4, kN * kK) &&
       load("head_decide.i32", decide, 4, kN);
  int total = 0;
  for (int r = 0; r < kR && ok; ++r) total += order_len[r];
  ok = ok && total <= kR * 320 && load("head_order.i32", order, 4, static_cast<size_t>(total));
  check(ok, "vectors", "head files readable");
  if (!ok) return;
  static tinyfed::Head head;
  tinyfed::head_init(head, kK);
  bool params_ok = true, order_ok = true, loss_ok = true, len_ok = true;
  float worst = 0.0f;
  int at = 0;
  for (int r = 0; r < kR; ++r) {
    // README: start each pass from the reference's head, so float differences do not build up.
    if (r > 0) memcpy(head.params, params[r - 1], sizeof params[r - 1]);
    float mean_loss = 0.0f;
    const Status s = tinyfed::head_record(head, ein[idx[r]], static_cast<uint8_t>(labels[r]),
                                          wts, kLr, &mean_loss, g_work);
    if (!tinyfed::ok(s)) {
      params_ok = false;
      break;
    }
    len_ok = len_ok && head.count == order_len[r];
    for (int i = 0; i < head.count; ++i) order_ok = order_ok && head.order[i] == order[at + i];
    at += order_len[r];
    const float d = max_abs_diff(head.params, params[r], kK * 65);
    if (!(d <= worst)) worst = d;
    params_ok = params_ok && d <= kHeadTol;
    loss_ok = loss_ok && fabsf(mean_loss - loss[r]) <= kHeadTol;
  }
  printf("       head: largest |diff| of the parameters after a record(): %.3g\n",
         static_cast<double>(worst));
  check(len_ok, "vectors", "store size after each of 70 recordings");
  check(order_ok, "vectors", "every pass's Fisher-Yates order exact");
  check(params_ok, "vectors", "the head after each record() within 1e-5");
  check(loss_ok, "vectors", "each pass's mean loss within 1e-5");
  bool store_ok = true;
  for (int i = 0; i < 320; ++i) {
    store_ok = store_ok && memcmp(head.store[i], store_q[i], 64) == 0 &&
               head.labels[i] == store_labels[i];
  }
  check(store_ok, "vectors", "the store's 320 embeddings and labels exact");
  // The whole sequence again, the head never reloaded: float differences could build up over
  // the 12,000 steps (README: 6.6e-7 for numpy's float32 exp), the spec allows 1e-5.
  tinyfed::head_init(head, kK);
  float drift = 0.0f;
  bool run_ok = true;
  for (int r = 0; r < kR && run_ok; ++r) {
    run_ok = tinyfed::ok(tinyfed::head_record(head, ein[idx[r]], static_cast<uint8_t>(labels[r]),
                                              wts, kLr, nullptr, g_work));
    const float d = max_abs_diff(head.params, params[r], kK * 65);
    if (!(d <= drift)) drift = d;
  }
  printf("       head: largest |diff| over 70 recordings without reloading: %.3g\n",
         static_cast<double>(drift));
  check(run_ok && drift <= kHeadTol, "vectors", "70 record()s in a row: the head within 1e-5");
  memcpy(head.params, params[kR - 1], sizeof params[kR - 1]);
  bool p_ok = true, d_ok = true;
  for (int n = 0; n < kN; ++n) {
    int word = 0;
    float p[kK];
    p_ok = p_ok &&
           tinyfed::ok(tinyfed::head_decide(head, ein[n], wts, tinyfed::kHeadThreshold, &word, p, g_work)) &&
           max_abs_diff(p, probs[n], kK) <= kHeadTol;
    d_ok = d_ok && word == decide[n];
  }
  check(p_ok, "vectors", "final probabilities within 1e-5");
  check(d_ok, "vectors", "decisions at threshold 0.6 exact");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) g_dir = argv[1];
  check_requant();
  check_kernels();
  check_head_hand();
  check_logmel_vectors();
  check_extractor_vectors();
  check_head_vectors();
  printf("test_dscnn: %d checks, %d failed\n", tinyfed_test::g_checks, tinyfed_test::g_failures);
  return tinyfed_test::g_failures == 0 ? 0 : 1;
}
