// The dscnn family's on-board part (docs/learning.md section 3): the float32 softmax head on
// the frozen extractor's 64-value embedding, trained by SGD with cross-entropy, with a replay
// store of int8 embeddings and 4 augmented copies of every recording. Python reference:
// tinyfed/model/dscnn/; shared vectors: vectors/dscnn/ (tests/test_dscnn.cpp).
//
// Typical use (the device):
//   static tinyfed::Head head;                         // sizeof ~ 23 KB, static
//   tinyfed::head_init(head, 3);                       // K = 3 words, zero head, empty store
//   tinyfed::head_record(head, input, label, weights, lr, &loss);  // after each recording
//   tinyfed::head_decide(head, input, weights, kHeadThreshold, &word, &p);  // inference
#pragma once

#include <stdint.h>

#include "dscnn.h"
#include "status.h"

namespace tinyfed {

constexpr int kHeadDim = kDscnnEmbedding;  // 64: the extractor's embedding
// Largest K the static memory holds; the link carries K, the fleet's words (3 on the paper's
// three-button boards). 8 keeps the head's parameters at 2,080 bytes.
constexpr int kHeadMaxClasses = 8;
constexpr int kHeadMaxParams = kHeadMaxClasses * (kHeadDim + 1);
constexpr int kHeadStoreSize = 320;  // spec: 320 embeddings, 20 utterances of 3 words x 5 copies
constexpr int kHeadCopies = 5;       // spec: the clip and 4 augmented copies
constexpr int kHeadShift = 3;        // spec: copies 1 and 2 shift the frames by -3 and +3
constexpr uint32_t kHeadNoiseSeed1 = 3;  // spec: copy 3's noise, xorshift32 seeded 3
constexpr uint32_t kHeadNoiseSeed2 = 4;  // spec: copy 4's noise, seeded 4
constexpr uint32_t kHeadOrderSeed = 0x9E3779B9u;  // spec: order seed 0x9E3779B9 ^ recordings
constexpr float kHeadThreshold = 0.6f;  // spec: the default rejection threshold
constexpr float kHeadProbFloor = 1e-12f;  // spec: loss = -log(max(p[y], 1e-12))
constexpr int kHeadUnknown = -1;          // head_decide's "unknown"

// The head, its replay store and the board's recording count; all static memory.
struct Head {
  float params[kHeadMaxParams];  // W[K][64] row-major then b[K]: K * 65 floats
  int k;                         // number of classes, 2..kHeadMaxClasses
  int8_t store[kHeadStoreSize][kHeadDim];  // the ring of int8 embeddings (slot order)
  uint8_t labels[kHeadStoreSize];
  uint16_t order[kHeadStoreSize];  // the current pass's Fisher-Yates order
  int count;                       // embeddings held, 0..320
  int next;                        // the slot the next embedding goes to (the oldest when full)
  uint32_t recordings;             // recordings since boot (seeds the order)
};

// xorshift32 (spec): x ^= x << 13; x ^= x >> 17; x ^= x << 5. Returns the new state.
inline uint32_t xorshift32(uint32_t x) {
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return x;
}

// A new head (zeros) with an empty store and no recordings. Errors: kBadArgument (k outside
// 2..kHeadMaxClasses).
Status head_init(Head& head, int k);

// p = softmax(z), z[k] = b[k] + sum_j W[k][j] e[j] (j ascending), maximum subtracted first.
// logits may be null. Errors: kBadArgument.
Status head_forward(const float* params, int k, const float* e, float* probs, float* logits);

// One SGD step on (e, y): cross-entropy loss -log(max(p[y], 1e-12)) (before the update), then
// W[k][j] -= lr (p[k] - [k == y]) e[j], b[k] -= lr (p[k] - [k == y]). loss may be null.
// Errors: kBadArgument (null, y >= k, lr not finite), kNonFinite (a non-finite embedding).
Status head_step(float* params, int k, const float* e, int y, float lr, float* loss);

// Augmented copy `copy` (1..4) of the extractor input in[50][40] into out[50][40]: 1 and 2
// shift the frames by -3 and +3 (edge frame repeated), 3 and 4 add xorshift32 noise in
// [-8, 7] (seeds 3 and 4) saturated to int8. Errors: kBadArgument.
Status head_augment(const int8_t* in, int copy, int8_t* out);

// Fisher-Yates order of 0..n-1: i from n - 1 down to 1, x = xorshift32(x), swap order[i] and
// order[x % (i + 1)], x starting at seed. Errors: kBadArgument.
Status head_shuffle(uint16_t* order, int n, uint32_t seed);

// Appends one embedding to the ring (overwrites the oldest when full). Errors: kBadArgument.
Status head_store_add(Head& head, const int8_t* embedding, uint8_t label);

// One pass of head_step over the whole store in a Fisher-Yates order seeded
// kHeadOrderSeed ^ head.recordings. mean_loss (may be null) gets the pass's mean loss.
Status head_replay_pass(Head& head, const DscnnWeights& wts, float lr, float* mean_loss);

// After a recording: the embeddings of the input and its 4 copies (5 extractor runs) go into
// the store, head.recordings counts it, then one replay pass. Errors: kBadArgument (label >= k),
// the extractor's errors.
Status head_record(Head& head, const int8_t* input, uint8_t label, const DscnnWeights& wts,
                   float lr, float* mean_loss, DscnnWork& work);

// Inference: the word with the highest probability if it is at least `threshold`, else
// kHeadUnknown. probs (may be null) receives the K probabilities.
Status head_decide(const Head& head, const int8_t* input, const DscnnWeights& wts,
                   float threshold, int* word, float* probs, DscnnWork& work);

}  // namespace tinyfed
