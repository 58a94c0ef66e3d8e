// The device state machine (core/device) through an in-memory fake HAL, frame by frame:
// bad frames give the right ERROR and change nothing; a model download is applied only after
// its CRC-32 verifies; corrupted, incomplete, aborted or timed-out downloads leave the weights
// untouched; host samples and button presses train and emit LOSS; READ returns the model.
// The board's failure modes as HAL fakes: a link that takes no more output (READ waits, loses
// nothing), a transport switch mid-frame (resync), a microphone that never delivers or does
// not start (no lock in RECORDING), RESET (the ACK leaves before the reboot). And the user's
// side: transfer LED, the inference blink, the long press that asks for a round.
// One file of ~900 lines on purpose: the checks run in order on one Device, each starting from
// the state the ones before left (as in a board's life), which a split would have to rebuild.
//
//   test_device [VECTORS_DIR]    (the vectors are not needed; make test passes them anyway)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "device.h"
#include "device_harness.h"
#include "link.h"

using namespace tinyfed;
using namespace tinyfed::link;

namespace {

using tinyfed_test::check;
using tinyfed_test::g_checks;
using tinyfed_test::g_failures;

// A deterministic model different from the seeded one, as little-endian bytes.
uint8_t g_model[kModelBytes];
void make_model(float scale) {
  for (uint32_t i = 0; i < static_cast<uint32_t>(kParams); ++i) {
    const float v = scale * static_cast<float>(static_cast<int32_t>(i % 97) - 48) / 97.0f;
    put_f32(g_model, 4 * i, v);
  }
}

// A snapshot of everything a bad frame must not change.
struct Snapshot {
  float params[kParams];
  State state;
  uint32_t round, steps, total;
  float lr, momentum;
  bool xfer;
};
Snapshot g_snap;
void snapshot() {
  memcpy(g_snap.params, g_dev.params(), sizeof g_snap.params);
  g_snap.state = g_dev.state();
  g_snap.round = g_dev.model_round();
  g_snap.steps = g_dev.steps_since_global();
  g_snap.total = g_dev.total_steps();
  g_snap.lr = g_dev.lr();
  g_snap.momentum = g_dev.momentum();
  g_snap.xfer = g_dev.transfer_open();
}
bool unchanged() {
  return memcmp(g_snap.params, g_dev.params(), sizeof g_snap.params) == 0 &&
         g_snap.state == g_dev.state() && g_snap.round == g_dev.model_round() &&
         g_snap.steps == g_dev.steps_since_global() && g_snap.total == g_dev.total_steps() &&
         g_snap.lr == g_dev.lr() && g_snap.momentum == g_dev.momentum() &&
         g_snap.xfer == g_dev.transfer_open();
}

bool velocity_zero() {
  for (int i = 0; i < kParams; ++i) {
    if (g_dev.velocity()[i] != 0.0f) return false;
  }
  return true;
}

// ---- tests ------------------------------------------------------------------------------

void test_boot() {
  printf("boot\n");
  DeviceConfig cfg;
  check(ok(g_dev.begin(&g_hal, cfg)), "boot", "begin() succeeds");
  const OutFrame* h = g_hal.find(MsgType::kHello);
  check(h != nullptr && h->length == msg::Hello::kFixedSize, "boot", "HELLO is sent at boot");
  if (h == nullptr) return;
  check(get_u32(h->payload, msg::Hello::kBootId) == 0x1234u, "boot",
        "HELLO carries the HAL's random boot id");
  check(h->payload[msg::Hello::kBoardId] == 0xB0 && h->payload[msg::Hello::kFlags] == 1, "boot",
        "HELLO carries the board id and the HAL's flags");
  check(h->payload[msg::Hello::kPipeline] == 2 && get_u16(h->payload, msg::Hello::kArch) == 1 &&
            h->payload[msg::Hello::kWindow] == kDefaultWindow &&
            get_u16(h->payload, msg::Hello::kChunkBytes) == kChunkBytes,
        "boot", "HELLO: pipeline centroid, arch 650-16-3, window, chunk size");
  check(get_f32(h->payload, msg::Hello::kLr) == 0.3f &&
            get_f32(h->payload, msg::Hello::kMomentum) == 0.9f &&
            get_u16(h->payload, msg::Hello::kLocalSteps) == 10,
        "boot", "HELLO: the paper's hyper-parameters");
  float fresh[kParams];
  nn_init_params(fresh, kDefaultSeed);
  check(memcmp(fresh, g_dev.params(), sizeof fresh) == 0 && velocity_zero(), "boot",
        "the model is the seeded one, momentum zero");
}

void test_bad_frames() {
  printf("bad frames: an ERROR naming the problem, nothing changed\n");
  struct Case {
    const char* name;
    uint8_t wire[300];
    size_t n;
    ErrorCode code;
  };
  static Case cases[8];
  size_t nc = 0;
  auto raw_frame = [](Case& c, uint8_t version, uint8_t type, uint16_t length,
                      const uint8_t* payload, size_t n, bool bad_crc) {
    uint8_t raw[300];
    raw[0] = version;
    raw[1] = type;
    put_u16(raw, 2, 7);
    put_u16(raw, 4, length);
    memcpy(raw + 6, payload, n);
    uint16_t crc = crc16(raw, 6 + n);
    if (bad_crc) crc ^= 0x0100;
    put_u16(raw, 6 + n, crc);
    c.n = cobs_encode(raw, 8 + n, c.wire, sizeof c.wire - 1);
    c.wire[c.n++] = 0;
  };
  const uint8_t read_payload[5] = {0, 0, 0, 0, 8};
  cases[nc] = Case{"BAD_CRC: a corrupted READ", {}, 0, ErrorCode::kBadCrc};
  raw_frame(cases[nc++], 1, 0x08, 5, read_payload, 5, true);
  cases[nc] = Case{"BAD_VERSION: protocol version 2", {}, 0, ErrorCode::kBadVersion};
  raw_frame(cases[nc++], 2, 0x01, 0, nullptr, 0, false);
  cases[nc] = Case{"BAD_LENGTH: length field 4, 5 bytes", {}, 0, ErrorCode::kBadLength};
  raw_frame(cases[nc++], 1, 0x08, 4, read_payload, 5, false);
  cases[nc] = Case{"BAD_LENGTH: READ with a 4-byte payload", {}, 0, ErrorCode::kBadLength};
  raw_frame(cases[nc++], 1, 0x08, 4, read_payload, 4, false);
  cases[nc] = Case{"UNKNOWN_TYPE: type 0x30", {}, 0, ErrorCode::kUnknownType};
  raw_frame(cases[nc++], 1, 0x30, 0, nullptr, 0, false);
  cases[nc] = Case{"UNKNOWN_TYPE: a board-to-host HELLO", {}, 0, ErrorCode::kUnknownType};
  raw_frame(cases[nc++], 1, 0x40, 0, nullptr, 0, false);
  cases[nc] = Case{"BAD_ENCODING: COBS block past the end", {0x20, 1, 1, 1, 0}, 5,
                   ErrorCode::kBadEncoding};
  ++nc;
  cases[nc] = Case{"OVERFLOW: 280 bytes without a delimiter", {}, 281, ErrorCode::kOverflow};
  memset(cases[nc].wire, 0x11, 280);
  cases[nc].wire[280] = 0;
  ++nc;
  for (size_t i = 0; i < nc; ++i) {
    snapshot();
    g_hal.clear_out();
    g_hal.inject(cases[i].wire, cases[i].n);
    run(2);
    const OutFrame* e = g_hal.find(MsgType::kError);
    const bool right = e != nullptr && e->payload[msg::Error::kCode] ==
                                           static_cast<uint8_t>(cases[i].code) &&
                       e->length > msg::Error::kFixedSize && g_hal.count(MsgType::kError) == 1;
    char label[160];
    snprintf(label, sizeof label, "%s -> ERROR %s with a text", cases[i].name,
             error_name(cases[i].code));
    check(right, "error", label);
    snprintf(label, sizeof label, "%s: model, state, counters unchanged", cases[i].name);
    check(unchanged(), "state", label);
  }
  // The board still answers afterwards.
  g_hal.clear_out();
  send(MsgType::kHelloReq, nullptr, 0);
  run(1);
  check(g_hal.find(MsgType::kHello) != nullptr, "resync", "HELLO_REQ after the bad frames works");
}

void test_model_download() {
  printf("model download\n");
  make_model(1.0f);
  const uint32_t crc = crc32(g_model, kModelBytes);
  snapshot();
  g_hal.clear_out();
  // Out of state / range first.
  uint8_t p[kMaxPayload] = {0};
  const uint16_t s0 = send(MsgType::kXferChunk, p, 8);
  run(1);
  check(error_is(g_hal.find(MsgType::kError), ErrorCode::kBadState, s0) && unchanged(), "state",
        "XFER_CHUNK with no transfer open -> BAD_STATE, nothing changed");
  g_hal.clear_out();
  const uint16_t s1 = begin_xfer(XferTarget::kModel, 1000, crc, 1);
  run(1);
  check(error_is(g_hal.find(MsgType::kError), ErrorCode::kBadArgument, s1) && unchanged(),
        "args", "MODEL of 1000 bytes -> BAD_ARGUMENT, nothing changed");
  g_hal.clear_out();
  const uint16_t s2 = begin_xfer(static_cast<XferTarget>(9), kModelBytes, crc, 1);
  run(1);
  check(error_is(g_hal.find(MsgType::kError), ErrorCode::kBadArgument, s2) && unchanged(),
        "args", "unknown target 9 -> BAD_ARGUMENT, nothing changed");

  // A good download, with acknowledgements per window.
  g_hal.clear_out();
  const uint16_t sb = begin_xfer(XferTarget::kModel, kModelBytes, crc, 7);
  run(1);
  check(acked(sb, MsgType::kXferBegin) && g_dev.state() == State::kReceiving, "xfer",
        "XFER_BEGIN -> ACK, state RECEIVING");
  g_hal.clear_out();
  send_chunks(g_model, 0, kModelBytes);
  const size_t chunks = (kModelBytes + kChunkBytes - 1) / kChunkBytes;  // 184
  const size_t want_acks = (chunks + kDefaultWindow - 1) / kDefaultWindow;  // 23
  const OutFrame* last = g_hal.find(MsgType::kXferAck, want_acks - 1);
  check(g_hal.count(MsgType::kXferAck) == want_acks && last != nullptr &&
            get_u32(last->payload, 0) == kModelBytes,
        "xfer", "one XFER_ACK per 8 chunks, the last at 41868");
  check(memcmp(g_snap.params, g_dev.params(), sizeof g_snap.params) == 0, "atomic",
        "all chunks in, no END yet: the weights are untouched");
  g_hal.clear_out();
  const uint16_t se = send(MsgType::kXferEnd, nullptr, 0);
  run(1);
  check(acked(se, MsgType::kXferEnd), "xfer", "XFER_END -> ACK");
  check(memcmp(g_model, g_dev.params(), kModelBytes) == 0, "xfer",
        "the weights are the downloaded model, byte for byte");
  check(g_dev.model_round() == 7 && g_dev.steps_since_global() == 0 && velocity_zero() &&
            g_dev.state() == State::kIdle,
        "xfer", "model_round = meta, steps_since_global 0, momentum zero, IDLE");
}

void corrupted_download(const char* what, int mode) {
  // mode 0: wrong CRC; 1: incomplete then END; 2: ABORT; 3: timeout; 4: non-finite value.
  make_model(2.0f);
  if (mode == 4) put_u32(g_model, 4 * 1234, 0x7FC00000u);  // a NaN
  const uint32_t crc = crc32(g_model, kModelBytes) ^ (mode == 0 ? 1u : 0u);
  snapshot();
  g_hal.clear_out();
  begin_xfer(XferTarget::kModel, kModelBytes, crc, 99);
  run(1);
  send_chunks(g_model, 0, mode == 1 || mode == 2 || mode == 3 ? kModelBytes / 2 : kModelBytes);
  g_hal.clear_out();
  uint16_t s = 0;
  if (mode == 2) {
    s = send(MsgType::kXferAbort, nullptr, 0);
    run(1);
  } else if (mode == 3) {
    run(2, kXferTimeoutMs);
  } else {
    s = send(MsgType::kXferEnd, nullptr, 0);
    run(1);
  }
  char label[160];
  bool reply = false;
  if (mode == 0) reply = error_is(g_hal.find(MsgType::kError), ErrorCode::kChecksum, s);
  if (mode == 1) reply = error_is(g_hal.find(MsgType::kError), ErrorCode::kBadState, s);
  if (mode == 2) reply = acked(s, MsgType::kXferAbort);
  if (mode == 3) reply = g_hal.find(MsgType::kLog) != nullptr && !g_dev.transfer_open();
  if (mode == 4) reply = error_is(g_hal.find(MsgType::kError), ErrorCode::kNonFinite, s);
  snprintf(label, sizeof label, "%s: the right reply", what);
  check(reply, "reply", label);
  snprintf(label, sizeof label, "%s: weights and model_round untouched", what);
  check(memcmp(g_snap.params, g_dev.params(), sizeof g_snap.params) == 0 &&
            g_dev.model_round() == g_snap.round,
        "atomic", label);
  if (mode == 1) {
    // Still open: the host may send the rest. Abort to clean up.
    check(g_dev.transfer_open(), "xfer", "incomplete END keeps the transfer open");
    send(MsgType::kXferAbort, nullptr, 0);
    run(1);
  }
  snprintf(label, sizeof label, "%s: momentum zero, IDLE", what);
  check(velocity_zero() && g_dev.state() == State::kIdle && !g_dev.transfer_open(), "state",
        label);
}

void test_gaps() {
  printf("windowed acknowledgement\n");
  make_model(3.0f);
  begin_xfer(XferTarget::kModel, kModelBytes, crc32(g_model, kModelBytes), 1);
  run(1);
  g_hal.clear_out();
  chunk(g_model, 0, kChunkBytes);
  chunk(g_model, 2 * kChunkBytes, kChunkBytes);  // chunk 1 lost
  chunk(g_model, 3 * kChunkBytes, kChunkBytes);
  run(1);
  const OutFrame* a = g_hal.find(MsgType::kXferAck);
  check(g_hal.count(MsgType::kXferAck) == 1 && a != nullptr &&
            get_u32(a->payload, 0) == kChunkBytes,
        "gap", "a gap gives one XFER_ACK(next_offset), not one per chunk");
  g_hal.clear_out();
  // Go back to the gap: a new window of 8 chunks starts at the acknowledged offset.
  send_chunks(g_model, kChunkBytes, 9 * kChunkBytes);
  const OutFrame* b = g_hal.find(MsgType::kXferAck);
  check(g_hal.count(MsgType::kXferAck) == 1 && b != nullptr &&
            get_u32(b->payload, 0) == 9 * kChunkBytes,
        "gap", "resending from the gap fills it; 8 chunks later one XFER_ACK(9 chunks)");
  g_hal.clear_out();
  chunk(g_model, 8 * kChunkBytes, kChunkBytes);  // the window's last chunk again (ack lost)
  run(1);
  const OutFrame* c = g_hal.find(MsgType::kXferAck);
  check(c != nullptr && get_u32(c->payload, 0) == 9 * kChunkBytes, "dup",
        "a duplicate ending a window is re-acknowledged");
  g_hal.clear_out();
  chunk(g_model, 2 * kChunkBytes, kChunkBytes);  // an older duplicate
  run(1);
  check(g_hal.count(MsgType::kXferAck) == 0 && g_hal.count(MsgType::kError) == 0, "dup",
        "other duplicates are ignored silently");
  send(MsgType::kXferAbort, nullptr, 0);
  run(1);
}

void test_host_sample() {
  printf("train and infer on a sample from the host\n");
  // FEATURES, label 1: compare with nn_train_step on a copy.
  static float x[kFeatures];
  for (int i = 0; i < kFeatures; ++i) x[i] = sinf(0.01f * static_cast<float>(i));
  static float ref_params[kParams], ref_vel[kParams];
  memcpy(ref_params, g_dev.params(), sizeof ref_params);
  memcpy(ref_vel, g_dev.velocity(), sizeof ref_vel);
  float ref_loss = 0, ref_out[3];
  nn_train_step(ref_params, ref_vel, x, 1, g_dev.lr(), g_dev.momentum(), &ref_loss, ref_out);
  uint8_t bytes[kFeatureBytes];
  memcpy(bytes, x, sizeof bytes);
  const uint32_t total0 = g_dev.total_steps();
  g_hal.clear_out();
  begin_xfer(XferTarget::kFeatures, kFeatureBytes, crc32(bytes, sizeof bytes), 1);
  run(1);
  send_chunks(bytes, 0, kFeatureBytes);
  const uint16_t se = send(MsgType::kXferEnd, nullptr, 0);
  run(2);
  const OutFrame* l = g_hal.find(MsgType::kLoss);
  check(acked(se, MsgType::kXferEnd) && l != nullptr, "features", "XFER_END -> ACK, then LOSS");
  if (l != nullptr) {
    check(get_f32(l->payload, msg::Loss::kLoss) == ref_loss &&
              l->payload[msg::Loss::kLabel] == 1 &&
              l->payload[msg::Loss::kSource] == static_cast<uint8_t>(Source::kHost) &&
              get_u32(l->payload, msg::Loss::kStep) == total0 + 1 &&
              get_u32(l->payload, msg::Loss::kStepsSinceGlobal) == g_dev.steps_since_global(),
          "features", "LOSS: the step's loss, label 1, source HOST, step counters");
  }
  check(memcmp(ref_params, g_dev.params(), sizeof ref_params) == 0, "features",
        "the weights are exactly one nn_train_step further");

  // AUDIO, infer only: ACK, then INFER after the next poll; weights unchanged.
  static int16_t audio[kRecordSamples];
  for (size_t i = 0; i < kRecordSamples; ++i) {
    audio[i] = static_cast<int16_t>(8000.0f * sinf(0.2f * static_cast<float>(i)));
  }
  snapshot();
  g_hal.clear_out();
  begin_xfer(XferTarget::kAudio, kAudioBytes, crc32(reinterpret_cast<uint8_t*>(audio), kAudioBytes),
             kNoClass);
  run(1);
  send_chunks(reinterpret_cast<uint8_t*>(audio), 0, kAudioBytes);
  const uint16_t sa = send(MsgType::kXferEnd, nullptr, 0);
  run(3);
  const OutFrame* inf = g_hal.find(MsgType::kInfer);
  check(acked(sa, MsgType::kXferEnd) && inf != nullptr &&
            inf->payload[msg::Infer::kSource] == static_cast<uint8_t>(Source::kHost),
        "audio", "AUDIO with NO_CLASS -> ACK, then INFER (source HOST)");
  check(unchanged(), "audio", "inference changes no weight and no counter");
  g_hal.clear_out();
  const uint16_t sl = begin_xfer(XferTarget::kAudio, kAudioBytes, 0, 3);
  run(1);
  check(error_is(g_hal.find(MsgType::kError), ErrorCode::kBadArgument, sl) &&
            !g_dev.transfer_open(),
        "args", "label 3 -> BAD_ARGUMENT");
}

void test_params_and_model_upload() {
  printf("hyper-parameters, model upload, reset\n");
  uint8_t p[msg::SetParams::kFixedSize];
  put_f32(p, msg::SetParams::kLr, 0.1f);
  put_f32(p, msg::SetParams::kMomentum, 0.5f);
  put_u16(p, msg::SetParams::kLocalSteps, 5);
  g_hal.clear_out();
  const uint16_t s = send(MsgType::kSetParams, p, sizeof p);
  run(1);
  check(acked(s, MsgType::kSetParams) && g_dev.lr() == 0.1f && g_dev.momentum() == 0.5f &&
            g_dev.local_steps() == 5,
        "params", "SET_PARAMS -> ACK, applied");
  put_f32(p, msg::SetParams::kMomentum, 1.0f);
  snapshot();
  g_hal.clear_out();
  const uint16_t s2 = send(MsgType::kSetParams, p, sizeof p);
  run(1);
  check(error_is(g_hal.find(MsgType::kError), ErrorCode::kBadArgument, s2) && unchanged(),
        "params", "momentum 1.0 -> BAD_ARGUMENT, nothing changed");

  g_hal.clear_out();
  const uint16_t sg = send(MsgType::kGetModel, nullptr, 0);
  run(1);
  const OutFrame* info = g_hal.find(MsgType::kModelInfo);
  const uint32_t crc = crc32(reinterpret_cast<const uint8_t*>(g_dev.params()), kModelBytes);
  check(info != nullptr && get_u16(info->payload, msg::ModelInfo::kRefSeq) == sg &&
            get_u32(info->payload, msg::ModelInfo::kCrc32) == crc &&
            get_u32(info->payload, msg::ModelInfo::kTotalLen) == kModelBytes &&
            get_u32(info->payload, msg::ModelInfo::kTotalSteps) == g_dev.total_steps(),
        "upload", "GET_MODEL -> MODEL_INFO with length, CRC-32, counters");
  static uint8_t got[kModelBytes];
  memset(got, 0, sizeof got);
  uint32_t off = 0;
  while (off < kModelBytes) {
    uint8_t r[msg::Read::kFixedSize];
    put_u32(r, msg::Read::kOffset, off);
    put_u8(r, msg::Read::kCount, 200);
    g_hal.clear_out();
    send(MsgType::kRead, r, sizeof r);
    run(30);
    for (size_t i = 0; i < g_hal.out_count; ++i) {
      const OutFrame& f = g_hal.out[i];
      if (f.type != static_cast<uint8_t>(MsgType::kModelChunk)) continue;
      const uint32_t o = get_u32(f.payload, 0);
      const uint32_t n = f.length - 4u;
      memcpy(got + o, f.payload + 4, n);
      if (o + n > off) off = o + n;
    }
    if (g_hal.count(MsgType::kModelChunk) == 0) break;
  }
  check(memcmp(got, g_dev.params(), kModelBytes) == 0 && crc32(got, kModelBytes) == crc,
        "upload", "READ returns the whole model; its CRC-32 matches MODEL_INFO");

  g_hal.clear_out();
  const uint32_t old_boot = g_dev.boot_id();
  const uint16_t sr = send(MsgType::kReset, nullptr, 0);
  send(MsgType::kHelloReq, nullptr, 0);  // input after RESET is lost, as in a power cycle
  run(1);
  check(acked(sr, MsgType::kReset) && g_hal.reboots == 0 && g_hal.count(MsgType::kHello) == 0,
        "reset", "RESET -> ACK first; no reboot yet, the rest of the input dropped");
  g_hal.now += kResetDelayMs / 2;
  run(1);
  check(g_hal.reboots == 0, "reset", "still no reboot before kResetDelayMs (the ACK leaves)");
  g_hal.now += kResetDelayMs;
  run(1);
  float fresh[kParams];
  nn_init_params(fresh, kDefaultSeed);
  const OutFrame* h = g_hal.find(MsgType::kHello);
  check(g_hal.reboots == 1 && g_hal.out_at_reboot >= 1 && h != nullptr &&
            get_u32(h->payload, msg::Hello::kBootId) != old_boot,
        "reset", "then reboot() (the ACK written before it), HELLO with a new boot id");
  check(memcmp(fresh, g_dev.params(), sizeof fresh) == 0 && g_dev.total_steps() == 0 &&
            g_dev.lr() == 0.3f && g_dev.model_round() == 0,
        "reset", "after RESET: the fresh seeded model, counters and defaults");
}

void test_buttons() {
  printf("buttons, recording, LEDs\n");
  static int16_t clip[kRecordSamples];
  for (size_t i = 0; i < kRecordSamples; ++i) {
    const float env = (i > 6000 && i < 10000) ? 1.0f : 0.01f;
    clip[i] = static_cast<int16_t>(env * 9000.0f * sinf(0.3f * static_cast<float>(i)));
  }
  g_hal.mic_clip = clip;
  g_hal.clear_out();
  // A bouncing press of D3: 3 ms high/low flicker, then held.
  for (int i = 0; i < 6; ++i) {
    g_hal.buttons_now = (i % 2) ? 0 : kButtonD3;
    run(1, 3);
  }
  g_hal.buttons_now = kButtonD3;
  run(1, 5);
  check(g_dev.state() == State::kIdle, "debounce", "a bouncing level is not a press yet");
  run(6, 5);
  check(g_dev.state() == State::kArmed && g_hal.leds_now == kLedGreen, "press",
        "D3 held 30 ms: ARMED, LED green");
  g_hal.buttons_now = 0;
  run(6, 5);
  check(g_dev.state() == State::kRecording && g_hal.recording && (g_hal.leds_now & kLedBusy),
        "release", "released: RECORDING, busy LED on");
  // Host commands while recording.
  g_hal.clear_out();
  const uint16_t s = begin_xfer(XferTarget::kModel, kModelBytes, 0, 1);
  run(1);
  check(error_is(g_hal.find(MsgType::kError), ErrorCode::kBusy, s) &&
            g_dev.state() == State::kRecording,
        "busy", "XFER_BEGIN while recording -> BUSY, still recording");
  g_hal.mic_finished = true;
  run(3);
  const OutFrame* l = g_hal.find(MsgType::kLoss);
  check(l != nullptr && l->payload[msg::Loss::kLabel] == 1 &&
            l->payload[msg::Loss::kSource] == static_cast<uint8_t>(Source::kButton) &&
            g_dev.total_steps() == 1 && g_dev.state() == State::kIdle,
        "train", "recording done: one training step on keyword 2, LOSS (source BUTTON), IDLE");
  check(g_hal.count(MsgType::kState) >= 2, "state", "STATE frames report the changes");
  check(!(g_hal.leds_now & kLedBusy), "leds", "busy LED off after the step");
  // The blink ends by itself.
  run(20, 100);
  check(g_hal.leds_now == 0, "leds", "the result blink ends with the LEDs off");
}

// Presses button `b` (a kButtonD* bit) for `hold_ms`, then releases it.
void press(uint8_t b, uint32_t hold_ms) {
  g_hal.buttons_now = b;
  for (uint32_t t = 0; t < hold_ms; t += 10) run(1, 10);
  g_hal.buttons_now = 0;
  run(4, 10);
}

const OutFrame* find_log(const char* prefix) {
  for (size_t i = 0; i < g_hal.out_count; ++i) {
    const OutFrame& f = g_hal.out[i];
    if (f.type != static_cast<uint8_t>(MsgType::kLog)) continue;
    const size_t n = strlen(prefix);
    if (f.length >= msg::Log::kFixedSize + n &&
        memcmp(f.payload + msg::Log::kFixedSize, prefix, n) == 0) {
      return &f;
    }
  }
  return nullptr;
}

void test_dead_microphone() {
  printf("a microphone that never delivers, or does not start\n");
  g_hal.clear_out();
  g_hal.mic_finished = false;
  const int stops = g_hal.mic_stops;
  press(kButtonD2, 50);
  check(g_dev.state() == State::kRecording, "mic", "released: RECORDING");
  g_hal.now += kRecordTimeoutMs - 200;
  run(1);
  check(g_dev.state() == State::kRecording, "mic", "still RECORDING before the timeout");
  g_hal.now += 400;
  run(2);
  const OutFrame* l = find_log("microphone delivered no full recording");
  check(g_dev.state() == State::kIdle && g_hal.mic_stops == stops + 1 && l != nullptr &&
            l->payload[msg::Log::kLevel] == static_cast<uint8_t>(LogLevel::kError) &&
            g_hal.leds_now == 0,
        "mic", "no data for kRecordTimeoutMs: mic_stop(), LOG error, IDLE, LEDs off");
  const uint32_t steps = g_dev.total_steps();
  g_hal.mic_fails = true;
  g_hal.clear_out();
  press(kButtonD3, 50);
  check(g_dev.state() == State::kIdle && find_log("microphone failed to start") != nullptr &&
            g_dev.total_steps() == steps,
        "mic", "mic_start() refused: LOG error, IDLE at once, no training step");
  g_hal.mic_fails = false;
  press(kButtonD3, 50);
  g_hal.mic_finished = true;
  run(3);
  check(g_dev.total_steps() == steps + 1, "mic", "a working microphone afterwards trains again");
  run(20, 100);
}

void test_back_pressure() {
  printf("a link that takes no more output: READ waits, loses nothing\n");
  g_hal.clear_out();
  g_hal.room = 0;
  g_hal.dropped = 0;
  uint8_t r[msg::Read::kFixedSize];
  put_u32(r, msg::Read::kOffset, 0);
  put_u8(r, msg::Read::kCount, 20);
  send(MsgType::kRead, r, sizeof r);
  run(5);
  check(g_hal.count(MsgType::kModelChunk) == 0 && g_dev.output_pending(), "room",
        "no room: no MODEL_CHUNK, the READ stays pending");
  uint32_t expect = 0;
  bool in_order = true;
  for (int i = 0; i < 40 && g_dev.output_pending(); ++i) {
    g_hal.room = kMaxFrameWire + 10;  // one frame per poll, as a slow BLE link drains
    run(1);
  }
  for (size_t i = 0; i < g_hal.out_count; ++i) {
    const OutFrame& f = g_hal.out[i];
    if (f.type != static_cast<uint8_t>(MsgType::kModelChunk)) continue;
    in_order = in_order && get_u32(f.payload, 0) == expect;
    expect += f.length - 4u;
  }
  check(g_hal.count(MsgType::kModelChunk) == 20 && in_order, "room",
        "one frame of room per poll: all 20 chunks, in order (none dropped)");
  g_hal.room = kLinkRoomUnlimited;
}

void test_link_switch() {
  printf("switching transports mid-frame: resync\n");
  make_model(0.25f);
  begin_xfer(XferTarget::kModel, kModelBytes, crc32(g_model, kModelBytes), 9);
  run(1);
  chunk(g_model, 0, kChunkBytes);
  // Half of a frame from the old host, then the switch.
  uint8_t wire[kMaxFrameWire];
  uint8_t p[msg::Read::kFixedSize] = {0, 0, 0, 0, 1};
  const size_t w = encode_frame(static_cast<uint8_t>(MsgType::kRead), 7, p, sizeof p, wire,
                                sizeof wire);
  g_hal.inject(wire, w / 2);
  run(1);
  g_hal.clear_out();
  g_hal.switched = true;
  const uint16_t s = send(MsgType::kHelloReq, nullptr, 0);
  run(2);
  (void)s;
  check(g_hal.count(MsgType::kError) == 0 && g_hal.count(MsgType::kHello) == 2 &&
            g_hal.count(MsgType::kModelChunk) == 0,
        "switch", "old host's half frame discarded: no ERROR, HELLO on switch and on HELLO_REQ");
  check(!g_dev.transfer_open() && g_dev.state() == State::kIdle &&
            find_log("link switched to another host: transfer") != nullptr,
        "switch", "the old host's open transfer is abandoned (LOG warning)");
}

void test_transfer_led() {
  printf("LED while a model transfers\n");
  make_model(0.5f);
  run(2, kUploadLedHoldMs);  // the previous tests' READs are long past
  g_hal.led_changes = 0;
  begin_xfer(XferTarget::kModel, kModelBytes, crc32(g_model, kModelBytes), 11);
  run(1);
  check(g_hal.leds_now == kLedBusy && g_dev.state() == State::kReceiving, "led",
        "download: built-in LED on while RECEIVING");
  send_chunks(g_model, 0, kModelBytes);
  send(MsgType::kXferEnd, nullptr, 0);
  run(1);
  check(g_hal.leds_now == 0 && g_dev.model_round() == 11, "led", "download applied: LED off");
  send(MsgType::kGetModel, nullptr, 0);
  run(1);
  uint8_t r[msg::Read::kFixedSize];
  put_u32(r, msg::Read::kOffset, 0);
  put_u8(r, msg::Read::kCount, 8);
  send(MsgType::kRead, r, sizeof r);
  run(1);
  check(g_hal.leds_now == kLedBusy, "led", "upload: LED on during GET_MODEL/READ");
  g_hal.now += kUploadLedHoldMs / 2;
  run(1);
  check(g_hal.leds_now == kLedBusy, "led", "and between two READs (one round trip)");
  g_hal.now += kUploadLedHoldMs;
  run(1);
  check(g_hal.leds_now == 0, "led", "off kUploadLedHoldMs after the last READ");
}

void test_infer_blink() {
  printf("the inference result as the paper shows it\n");
  // A model whose output layer says "class 1" whatever the input: all weights 0, output
  // biases -5, +5, -5 (sigmoid: 0.007, 0.993, 0.007).
  memset(g_model, 0, sizeof g_model);
  put_f32(g_model, 4 * (kParams - 3), -5.0f);
  put_f32(g_model, 4 * (kParams - 2), 5.0f);
  put_f32(g_model, 4 * (kParams - 1), -5.0f);
  begin_xfer(XferTarget::kModel, kModelBytes, crc32(g_model, kModelBytes), 12);
  run(1);
  send_chunks(g_model, 0, kModelBytes);
  send(MsgType::kXferEnd, nullptr, 0);
  run(2, kUploadLedHoldMs);
  g_hal.clear_out();
  g_hal.mic_finished = false;
  press(kButtonD5, 50);
  g_hal.led_changes = 0;
  g_hal.mic_finished = true;
  run(3);
  const OutFrame* inf = g_hal.find(MsgType::kInfer);
  check(inf != nullptr, "infer", "D5: INFER sent");
  if (inf == nullptr) return;
  run(40, 50);
  check(inf->payload[msg::Infer::kPrediction] == 1 && g_hal.times_lit(kLedGreen) == kInferBlinkCount &&
            g_hal.times_lit(kLedRed) == 0 && g_hal.leds_now == 0,
        "infer", "class 1 above 0.6: green blinks 5 times (the paper's inference button), then off");
}

void test_round_request() {
  printf("a person asks for a round: hold D5 3 s\n");
  g_hal.clear_out();
  const int starts = g_hal.mic_starts;
  g_hal.buttons_now = kButtonD5;
  for (uint32_t t = 0; t < kRoundRequestHoldMs + 100; t += 50) run(1, 50);
  check(g_hal.leds_now == (kLedRed | kLedGreen | kLedBlue | kLedBusy), "round",
        "held past 3 s: all LEDs on (release now)");
  g_hal.buttons_now = 0;
  run(4, 10);
  const OutFrame* l = find_log(kRoundRequestEvent);
  check(l != nullptr && l->payload[msg::Log::kLevel] == static_cast<uint8_t>(LogLevel::kInfo),
        "round", "released: LOG info \"event round_request ...\"");
  check(g_hal.mic_starts == starts && g_dev.state() == State::kIdle, "round",
        "no recording; IDLE");
  run(20, 100);
  g_hal.clear_out();
  press(kButtonD5, 200);
  check(find_log(kRoundRequestEvent) == nullptr && g_dev.state() == State::kRecording, "round",
        "a short D5 press still records for inference");
  g_hal.mic_finished = true;
  run(3);
  run(40, 50);
}

}  // namespace

int main(int, char**) {
  test_boot();
  test_bad_frames();
  test_model_download();
  printf("failed downloads leave the model untouched\n");
  corrupted_download("wrong CRC-32", 0);
  corrupted_download("half the model, then END", 1);
  corrupted_download("half the model, then XFER_ABORT", 2);
  corrupted_download("half the model, then silence (timeout)", 3);
  corrupted_download("a NaN in the model", 4);
  test_gaps();
  test_host_sample();
  test_params_and_model_upload();
  test_buttons();
  test_dead_microphone();
  test_back_pressure();
  test_link_switch();
  test_transfer_led();
  test_infer_blink();
  test_round_request();
  check(g_hal.out_errors == 0, "wire", "every frame the board sent decodes");
  printf("test_device: %d checks, %d failed: %s\n", g_checks, g_failures,
         g_failures ? "FAIL" : "ok");
  return g_failures ? 1 : 0;
}
