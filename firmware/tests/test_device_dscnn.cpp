// The device running the dscnn family (docs/learning.md) through the fake HAL: HELLO says the
// family; only the 780-byte head transfers; a host's int8 input or audio trains the head by
// replay (the device's head equals head_record run beside it on the same input) and infers with
// the rejection rule; a new global head replaces the head and keeps the user's replay store;
// the paper's sizes are refused with the expected ones named.
//
//   test_device_dscnn [VECTORS_DIR]    (the vectors are not needed)
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "device.h"
#include "device_harness.h"
#include "dscnn_weights.h"
#include "link.h"

using namespace tinyfed;
using namespace tinyfed::link;

namespace {

using tinyfed_test::check;
using tinyfed_test::g_checks;
using tinyfed_test::g_failures;

const DscnnWeights kWeights = dscnn_weights_from(
    dscnn_weights::kLayer, dscnn_weights::kEmbedA, dscnn_weights::kEmbedB);

Head g_ref;  // the reference: the same head code run beside the device
DscnnWork g_work;
LogmelWork g_logmel;

void input_of(int variant, int8_t* x) {
  for (int i = 0; i < kLogmelValues; ++i) {
    const float v = 40.0f * sinf(0.013f * static_cast<float>(i * (variant + 2)) + variant);
    x[i] = static_cast<int8_t>(static_cast<int>(v));
  }
}

// Sends one whole transfer and polls until the device has answered.
uint16_t transfer(XferTarget target, const uint8_t* data, uint32_t n, uint32_t meta) {
  begin_xfer(target, n, crc32(data, n), meta);
  run(1);
  send_chunks(data, 0, n);
  const uint16_t end = send(MsgType::kXferEnd, nullptr, 0);
  run(3);
  return end;
}

void test_hello_and_fresh_head() {
  printf("boot: the dscnn family in HELLO, a zero head of 780 bytes\n");
  const OutFrame* h = g_hal.find(MsgType::kHello);
  check(h != nullptr && get_u16(h->payload, msg::Hello::kArch) ==
                            static_cast<uint16_t>(ArchId::kDscnnHead) &&
            h->payload[msg::Hello::kPipeline] == static_cast<uint8_t>(PipelineId::kLogmel40),
        "hello", "arch DSCNN_HEAD (2), pipeline LOGMEL40 (3)");
  check(g_dev.model_bytes() == 780 && g_dev.head().k == 3 && g_dev.head().count == 0, "hello",
        "model = the head: 3 x 65 floats; an empty replay store");
  bool zero = true;
  for (int i = 0; i < 195; ++i) zero = zero && g_dev.params()[i] == 0.0f;
  check(zero, "hello", "a new head starts at zeros (the spec)");
  g_hal.clear_out();
  send(MsgType::kGetModel, nullptr, 0);
  run(2);
  const OutFrame* info = g_hal.find(MsgType::kModelInfo);
  check(info != nullptr && get_u32(info->payload, msg::ModelInfo::kTotalLen) == 780 &&
            get_u32(info->payload, msg::ModelInfo::kCrc32) ==
                crc32(reinterpret_cast<const uint8_t*>(g_dev.params()), 780),
        "model", "MODEL_INFO: 780 bytes, the head's CRC-32");
}

void test_train_on_host_inputs() {
  printf("host int8 inputs train the head by replay, as head_record does\n");
  head_init(g_ref, 3);
  static int8_t x[kLogmelValues];
  bool same = true, losses = true;
  for (int r = 0; r < 4; ++r) {
    input_of(r, x);
    const uint8_t label = static_cast<uint8_t>(r % 3);
    float probs[3], ref_loss = 0.0f;
    int word = 0;
    head_decide(g_ref, x, kWeights, kHeadThreshold, &word, probs, g_work);
    head_record(g_ref, x, label, kWeights, g_dev.lr(), &ref_loss, g_work);
    g_hal.clear_out();
    const uint16_t end =
        transfer(XferTarget::kFeatures, reinterpret_cast<uint8_t*>(x), kLogmelValues, label);
    const OutFrame* l = g_hal.find(MsgType::kLoss);
    check(acked(end, MsgType::kXferEnd) && l != nullptr, "train", "2,000 int8 -> ACK, LOSS");
    if (l == nullptr) return;
    losses = losses && get_f32(l->payload, msg::Loss::kLoss) == ref_loss &&
             l->payload[msg::Loss::kLabel] == label &&
             get_f32(l->payload, msg::Loss::kOutputs) == probs[0] &&
             get_f32(l->payload, msg::Loss::kOutputs + 8) == probs[2];
    same = same && memcmp(g_dev.params(), g_ref.params, 780) == 0;
  }
  check(losses, "train", "LOSS: the replay pass's mean loss, the label, the clip's probabilities");
  check(same, "train", "after every recording the head equals head_record's, bit for bit");
  check(g_dev.head().count == 20 && g_dev.total_steps() == 4, "train",
        "5 embeddings stored per recording; one step counted per recording");
}

void test_global_head_keeps_the_store() {
  printf("a new global head replaces the head and keeps the replay store\n");
  static uint8_t head[780];
  for (uint32_t i = 0; i < 195; ++i) put_f32(head, 4 * i, 0.01f * static_cast<float>(i % 13));
  g_hal.clear_out();
  const uint16_t end = transfer(XferTarget::kModel, head, sizeof head, 7);
  check(acked(end, MsgType::kXferEnd) && memcmp(g_dev.params(), head, 780) == 0 &&
            g_dev.model_round() == 7,
        "global", "780 bytes, CRC ok -> applied, round 7");
  check(g_dev.head().count == 20, "global", "the user's 20 stored embeddings stay");
  static uint8_t paper[kModelBytes];
  g_hal.clear_out();
  const uint16_t s = begin_xfer(XferTarget::kModel, kModelBytes, crc32(paper, kModelBytes), 8);
  run(1);
  check(error_is(g_hal.find(MsgType::kError), ErrorCode::kBadArgument, s) &&
            g_dev.model_round() == 7,
        "global", "a paper-sized model (41,868 bytes) -> BAD_ARGUMENT, nothing changes");
  g_hal.clear_out();
  const uint16_t f = begin_xfer(XferTarget::kFeatures, kFeatureBytes, 0, 1);
  run(1);
  check(error_is(g_hal.find(MsgType::kError), ErrorCode::kBadArgument, f), "args",
        "650 float features (2,600 bytes) -> BAD_ARGUMENT");
}

void test_audio_inference() {
  printf("audio from the host: logmel40, the extractor, the decision\n");
  static int16_t audio[kRecordSamples];
  for (size_t i = 0; i < kRecordSamples; ++i) {
    const float env = (i > 6000 && i < 10000) ? 1.0f : 0.02f;
    audio[i] = static_cast<int16_t>(9000.0f * env * sinf(0.21f * static_cast<float>(i)));
  }
  static int16_t copy[kRecordSamples];
  memcpy(copy, audio, sizeof copy);
  static int8_t x[kLogmelValues];
  logmel40_compute(copy, x, g_logmel);
  memcpy(g_ref.params, g_dev.params(), 780);
  float probs[3];
  int word = 0;
  head_decide(g_ref, x, kWeights, kHeadThreshold, &word, probs, g_work);
  const uint32_t total = g_dev.total_steps();
  g_hal.clear_out();
  transfer(XferTarget::kAudio, reinterpret_cast<uint8_t*>(audio), kAudioBytes, kNoClass);
  run(3);
  const OutFrame* inf = g_hal.find(MsgType::kInfer);
  check(inf != nullptr && get_f32(inf->payload, msg::Infer::kOutputs + 4) == probs[1] &&
            inf->payload[msg::Infer::kPrediction] ==
                (word == kHeadUnknown ? kNoClass : static_cast<uint8_t>(word)),
        "infer", "INFER: the head's probabilities and decision on the clip's logmel40");
  check(g_dev.total_steps() == total && memcmp(g_dev.params(), g_ref.params, 780) == 0,
        "infer", "inference trains nothing");
}

}  // namespace

int main(int, char**) {
  DeviceConfig config;
  config.arch = ArchId::kDscnnHead;
  config.pipeline = PipelineId::kLogmel40;
  config.extractor = &kWeights;
  config.lr = 0.1f;
  DeviceConfig bad = config;
  bad.pipeline = PipelineId::kCentroid;
  check(g_dev.begin(&g_hal, bad) == Status::kBadArgument, "config",
        "dscnn with the MFCC pipeline is refused");
  bad = config;
  bad.extractor = nullptr;
  check(g_dev.begin(&g_hal, bad) == Status::kBadArgument, "config",
        "dscnn without an extractor is refused");
  check(ok(g_dev.begin(&g_hal, config)), "config", "dscnn, logmel40, an extractor: starts");
  test_hello_and_fresh_head();
  test_train_on_host_inputs();
  test_global_head_keeps_the_store();
  test_audio_inference();
  check(g_hal.out_errors == 0, "wire", "every frame the board sent decodes");
  printf("test_device_dscnn: %d checks, %d failed: %s\n", g_checks, g_failures,
         g_failures ? "FAIL" : "ok");
  return g_failures ? 1 : 0;
}
