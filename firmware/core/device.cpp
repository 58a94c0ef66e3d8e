// The device: lifecycle, the main loop's state machine, computation, and the frames it sends
// (each built by the encoder link_spec.h generates); see device.h. Commands and transfers are
// in device_commands.cpp, buttons and LEDs in device_ui.cpp.
#include "device.h"

#include <math.h>
#include <string.h>

#include "align.h"
#include "device_internal.h"
#include "text.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "models travel as little-endian float32 and are copied as-is: little-endian CPUs only"
#endif

namespace tinyfed {

using device_detail::colour_of;
using device_detail::state_name;
using device_detail::target_name;

namespace {

// Upper bound of bytes taken from the link per poll, so a flood cannot starve the buttons:
// 16 full frames, two windows.
constexpr size_t kMaxRxPerPoll = 16 * link::kMaxFrameWire;
// Largest learning rate SET_PARAMS accepts (spec.py SetParams: lr in (0, 10]).
constexpr float kMaxLearningRate = 10.0f;

}  // namespace

bool params_valid(float lr, float momentum, uint16_t local_steps) {
  // Written so that NaN fails every comparison.
  return lr > 0.0f && lr <= kMaxLearningRate && momentum >= 0.0f && momentum < 1.0f &&
         local_steps >= 1;
}

// ---------------------------------------------------------------------------- lifecycle

Status Device::begin(Hal* hal, const DeviceConfig& config) {
  if (hal == nullptr) return Status::kBadArgument;
  if (!params_valid(config.lr, config.momentum, config.local_steps)) return Status::kBadArgument;
  const bool dscnn = config.arch == link::ArchId::kDscnnHead;
  if (dscnn) {
    if (config.pipeline != link::PipelineId::kLogmel40 || config.extractor == nullptr ||
        !ok(dscnn_check(*config.extractor))) {
      return Status::kBadArgument;
    }
  } else if (config.arch != link::ArchId::kFc650163 ||
             (config.pipeline != link::PipelineId::kPaper &&
              config.pipeline != link::PipelineId::kCentroid)) {
    return Status::kBadArgument;
  }
  hal_ = hal;
  config_ = config;
  model_bytes_ = dscnn ? kHeadModelBytes : kModelBytes;
  feature_bytes_ = dscnn ? kLogmelInputBytes : kFeatureBytes;
  Status s = dscnn ? head_init(head_, kOutputs) : nn_init_params(params_, config.seed);
  if (!ok(s)) return s;
  s = mfcc_init(mfcc_ws_);
  if (!ok(s)) return s;
  memset(velocity_, 0, sizeof velocity_);
  memset(audio_, 0, sizeof audio_);
  memset(features_, 0, sizeof features_);
  parser_.reset();
  state_ = State::kIdle;
  leds_ = 0;
  tx_seq_ = 0;
  boot_id_ = hal_->random32();
  lr_ = config.lr;
  momentum_ = config.momentum;
  local_steps_ = config.local_steps;
  model_round_ = 0;
  steps_since_global_ = 0;
  total_steps_ = 0;
  models_applied_ = 0;
  xfer_ = Transfer{};
  read_offset_ = 0;
  read_left_ = 0;
  now_ = hal_->millis();
  btn_raw_ = btn_stable_ = static_cast<uint8_t>(hal_->buttons() & 0x0F);  // held at boot: no press
  btn_changed_ms_ = now_;
  armed_ = -1;
  armed_ms_ = 0;
  round_request_ = false;
  record_ms_ = 0;
  upload_ms_ = 0;
  upload_seen_ = false;
  reset_pending_ = false;
  reset_ms_ = 0;
  pending_ = Pending::kNone;
  pending_label_ = link::kNoClass;
  pending_ref_seq_ = 0;
  blink_leds_ = 0;
  blink_left_ = 0;
  blink_ms_ = 0;
  state_sent_ = 0xFF;
  leds_sent_ = 0xFF;
  hal_->set_leds(0);
  Text t;
  t.str("boot id=").hex(boot_id_, 8).str(" seed=").u32(config.seed).str(" pipeline=")
      .str(config.pipeline == link::PipelineId::kPaper      ? "paper"
           : config.pipeline == link::PipelineId::kCentroid ? "centroid"
                                                            : "logmel40")
      .str(" family=").str(dscnn ? "dscnn" : "paper");
  log_line(LogLevel::kInfo, t.c_str(), false);
  send_hello();
  flush_state();
  return Status::kOk;
}

void Device::poll() {
  if (hal_ == nullptr) return;
  now_ = hal_->millis();

  // 0. RESET acknowledged: let the ACK leave, then reboot. Input meanwhile is dropped, as a
  // power cycle would lose it.
  if (reset_pending_) {
    size_t dropped = 0;
    while (dropped < kMaxRxPerPoll) {
      const size_t n = hal_->link_read(rx_chunk_, sizeof rx_chunk_);
      if (n == 0) break;
      dropped += n;
    }
    if (now_ - reset_ms_ < kResetDelayMs) return;
    reset_pending_ = false;
    hal_->reboot();        // does not return on hardware
    begin(hal_, config_);  // a host HAL returns: re-initialise in place, like a power cycle
    return;
  }
  if (hal_->link_switched()) link_switched();

  // 1. Link input: whole frames are handled as they complete.
  size_t taken = 0;
  while (taken < kMaxRxPerPoll) {
    const size_t n = hal_->link_read(rx_chunk_, sizeof rx_chunk_);
    if (n == 0) break;
    taken += n;
    for (size_t i = 0; i < n; ++i) {
      const link::FrameParser::Event ev = parser_.push(rx_chunk_[i]);
      if (ev == link::FrameParser::Event::kFrame) {
        handle_frame(parser_.frame());
        if (reset_pending_) return;  // RESET: like a power cycle, the rest of the input is lost
      } else if (ev == link::FrameParser::Event::kError) {
        const ErrorCode code = parser_.error();
        const char* text = "bad frame";
        switch (code) {
          case ErrorCode::kBadCrc: text = "frame CRC-16 mismatch"; break;
          case ErrorCode::kBadVersion: text = "protocol version differs from 1"; break;
          case ErrorCode::kBadLength: text = "frame length field disagrees with the frame"; break;
          case ErrorCode::kOverflow: text = "frame longer than the receive buffer"; break;
          case ErrorCode::kBadEncoding: text = "invalid COBS encoding"; break;
          default: break;
        }
        send_error(parser_.error_seq(), code, text);
      }
    }
  }

  // 2. A transfer whose host went silent is abandoned.
  if (xfer_.open && now_ - xfer_.last_ms > kXferTimeoutMs) {
    Text t;
    t.str("transfer of ").str(target_name(xfer_.target)).str(" timed out at ").u32(xfer_.next)
        .str(" of ").u32(xfer_.total_len).str(" bytes; abandoned");
    log_line(LogLevel::kWarn, t.c_str(), true);
    close_transfer(true);
  }

  // 3. Buttons, recording, computation.
  poll_buttons(now_);
  if (state_ == State::kRecording && hal_->mic_done()) {
    set_state(State::kComputing);  // computed at the next poll, once STATE is out
  } else if (state_ == State::kRecording && now_ - record_ms_ > kRecordTimeoutMs) {
    hal_->mic_stop();
    pending_ = Pending::kNone;
    Text t;
    t.str("microphone delivered no full recording in ").u32(kRecordTimeoutMs)
        .str(" ms; recording abandoned, board idle again");
    set_leds(0);
    set_state(State::kIdle);
    log_line(LogLevel::kError, t.c_str(), true);
  } else if (state_ == State::kComputing && pending_ != Pending::kNone) {
    const Pending p = pending_;
    pending_ = Pending::kNone;
    compute(pending_label_, p == Pending::kButton ? Source::kButton : Source::kHost,
            pending_ref_seq_, true);
  }

  // 4. Outputs that take several polls.
  poll_read();
  poll_blink(now_);
  poll_idle_leds();
  flush_state();
}

void Device::link_switched() {
  // Another host on another transport: nothing of the old host's half-received frame, READ or
  // transfer may leak into the new conversation.
  parser_.reset();
  read_left_ = 0;
  if (xfer_.open) {
    Text t;
    t.str("link switched to another host: transfer of ").str(target_name(xfer_.target))
        .str(" abandoned at ").u32(xfer_.next).str(" bytes");
    close_transfer(true);
    log_line(LogLevel::kWarn, t.c_str(), true);
  } else {
    log_line(LogLevel::kInfo, "link switched to another host", false);
  }
  send_hello();  // the new host missed the boot HELLO
  state_sent_ = 0xFF;  // and the current STATE
}

// ---------------------------------------------------------------------------- state, compute

void Device::compute(uint8_t label, Source source, uint16_t ref_seq, bool from_audio) {
  set_leds(kLedBusy);
  Status s = Status::kOk;
  const char* stage = "";
  if (from_audio && source == Source::kButton) {
    // The recording's level, for `tinyfed board selftest` and the hardware checklist (a
    // microphone at the library's default gain is ~30 dB quieter than the paper's).
    uint32_t peak = 0;
    float sum_sq = 0.0f;
    for (size_t i = 0; i < kRecordSamples; ++i) {
      const int32_t v = audio_[i];
      const uint32_t a = static_cast<uint32_t>(v < 0 ? -v : v);
      if (a > peak) peak = a;
      sum_sq += static_cast<float>(v) * static_cast<float>(v);
    }
    Text t;
    t.str("recording level peak=").u32(peak).str(" rms=")
        .f32(sqrtf(sum_sq / static_cast<float>(kRecordSamples)));
    log_line(LogLevel::kInfo, t.c_str(), true);
  }
  float outputs[kOutputs] = {0.0f, 0.0f, 0.0f};
  float loss = 0.0f;
  const bool train = label != link::kNoClass;
  int detected = -1;
  if (config_.arch == link::ArchId::kDscnnHead) {
    s = compute_dscnn(label, from_audio, outputs, &loss, &detected, &stage);
  } else if (from_audio) {
    if (config_.pipeline == link::PipelineId::kCentroid) {
      int32_t shift = 0;
      s = align_audio(audio_, static_cast<uint32_t>(kRecordSamples), &shift);
      stage = "alignment";
    }
    if (ok(s)) {
      s = mfcc_compute(audio_, features_, mfcc_ws_);
      stage = "MFCC";
    }
  }
  if (ok(s) && config_.arch != link::ArchId::kDscnnHead) {
    stage = train ? "training step" : "inference";
    s = train ? nn_train_step(params_, velocity_, features_, label, lr_, momentum_, &loss,
                              outputs)
              : nn_forward(params_, features_, outputs);
    if (ok(s)) detected = nn_detect(outputs);
  }
  set_leds(0);
  set_state(State::kIdle);
  if (!ok(s)) {
    Text t;
    t.str(stage).str(" failed (status ").u32(static_cast<uint32_t>(s)).str(")");
    const ErrorCode code =
        s == Status::kNonFinite ? ErrorCode::kNonFinite : ErrorCode::kBadArgument;
    if (source == Source::kHost) {
      hal_->log(LogLevel::kError, t.c_str());
      send_error(ref_seq, code, t.c_str());
    } else {
      log_line(LogLevel::kError, t.c_str(), true);
    }
    return;
  }
  Text t;
  if (train) {
    ++total_steps_;
    ++steps_since_global_;
    msg::Loss::Fields m{};
    m.step = total_steps_;
    m.loss = loss;
    m.label = label;
    memcpy(m.outputs, outputs, sizeof m.outputs);
    m.model_round = model_round_;
    m.steps_since_global = steps_since_global_;
    m.source = static_cast<uint8_t>(source);
    send(MsgType::kLoss, tx_payload_, msg::Loss::encode(m, tx_payload_));
    t.str("loss step=").u32(total_steps_).str(" label=").u32(label).str(" loss=").f32(loss);
  } else {
    msg::Infer::Fields m{};
    memcpy(m.outputs, outputs, sizeof m.outputs);
    m.prediction = detected >= 0 ? static_cast<uint8_t>(detected) : link::kNoClass;
    m.source = static_cast<uint8_t>(source);
    send(MsgType::kInfer, tx_payload_, msg::Infer::encode(m, tx_payload_));
    t.str("infer prediction=").i32(detected);
  }
  t.str(" outputs=").f32(outputs[0]).str(",").f32(outputs[1]).str(",").f32(outputs[2])
      .str(" source=").str(source == Source::kHost ? "host" : "button");
  log_line(LogLevel::kInfo, t.c_str(), false);
  // The paper: the class whose output is highest and above 0.6 (nn_detect; the dscnn family:
  // its probability at least kHeadThreshold) shows its colour; its inference button blinks it
  // five times. Below: no colour.
  if (detected >= 0) start_blink(colour_of(detected), train ? kTrainBlinkCount : kInferBlinkCount);
}

// The dscnn family: logmel40 (from a recording) or the host's int8 input, then the frozen
// extractor and the head. Training: the clip's probabilities before the update (what the board
// heard), then head_record (the clip and its 4 augmented copies into the replay store, one pass
// over the store); the loss is that pass's mean. Inference: head_decide.
Status Device::compute_dscnn(uint8_t label, bool from_audio, float* outputs, float* loss,
                             int* detected, const char** stage) {
  int8_t* input = reinterpret_cast<int8_t*>(features_);
  const DscnnWeights& wts = *config_.extractor;
  Status s = Status::kOk;
  if (from_audio) {
    *stage = "logmel40";
    s = logmel40_compute(audio_, input, dscnn_work().logmel);
    if (!ok(s)) return s;
  }
  *stage = "extractor";
  int word = kHeadUnknown;
  s = head_decide(head_, input, wts, kHeadThreshold, &word, outputs, dscnn_work().extractor);
  if (!ok(s)) return s;
  *detected = word;
  if (label == link::kNoClass) return Status::kOk;
  *stage = "training step";
  return head_record(head_, input, label, wts, lr_, loss, dscnn_work().extractor);
}

void Device::set_state(State s) {
  if (s == state_) return;
  if (s != State::kIdle) blink_left_ = 0;
  state_ = s;
  Text t;
  t.str("state ").str(state_name(s));
  hal_->log(LogLevel::kDebug, t.c_str());
}

void Device::flush_state() {
  const uint8_t s = static_cast<uint8_t>(state_);
  if (s == state_sent_ && leds_ == leds_sent_) return;
  state_sent_ = s;
  leds_sent_ = leds_;
  msg::State::Fields m{};
  m.state = s;
  m.led = leds_;
  send(MsgType::kState, tx_payload_, msg::State::encode(m, tx_payload_));
}

// ---------------------------------------------------------------------------- outputs

void Device::send(MsgType type, const uint8_t* payload, size_t n) {
  const size_t wire = link::encode_frame(static_cast<uint8_t>(type), tx_seq_, payload, n,
                                         tx_wire_, sizeof tx_wire_);
  if (wire == 0) return;  // cannot happen: every payload built here fits kMaxPayload
  ++tx_seq_;
  hal_->link_write(tx_wire_, wire);
}

void Device::send_hello() {
  msg::Hello::Fields m{};
  m.protocol = link::kProtocolVersion;
  m.boot_id = boot_id_;
  hal_->board_id(m.board_id);
  memcpy(m.fw_version, kFwVersion, sizeof m.fw_version);
  m.arch = static_cast<uint16_t>(config_.arch);
  m.pipeline = static_cast<uint8_t>(config_.pipeline);
  m.lr = lr_;
  m.momentum = momentum_;
  m.local_steps = local_steps_;
  m.model_round = model_round_;
  m.steps_since_global = steps_since_global_;
  m.total_steps = total_steps_;
  m.state = static_cast<uint8_t>(state_);
  m.window = link::kDefaultWindow;
  m.chunk_bytes = static_cast<uint16_t>(link::kChunkBytes);
  m.flags = hal_->hello_flags();
  send(MsgType::kHello, tx_payload_, msg::Hello::encode(m, tx_payload_));
}

void Device::send_ack(uint16_t ref_seq, uint8_t ref_type) {
  msg::Ack::Fields m{};
  m.ref_seq = ref_seq;
  m.ref_type = ref_type;
  send(MsgType::kAck, tx_payload_, msg::Ack::encode(m, tx_payload_));
}

void Device::send_error(uint16_t ref_seq, ErrorCode code, const char* text) {
  msg::Error::Fields m{};
  m.ref_seq = ref_seq;
  m.code = static_cast<uint8_t>(code);
  send(MsgType::kError, tx_payload_, msg::Error::encode(m, text, tx_payload_));
  Text t;
  t.str("error ").str(link::error_name(code)).str(": ").str(text);
  hal_->log(LogLevel::kWarn, t.c_str());
}

void Device::send_xfer_ack(uint32_t next_offset) {
  xfer_.last_ack = next_offset;
  xfer_.since_ack = 0;
  msg::XferAck::Fields m{};
  m.next_offset = next_offset;
  send(MsgType::kXferAck, tx_payload_, msg::XferAck::encode(m, tx_payload_));
}

void Device::log_line(LogLevel level, const char* text, bool to_link) {
  hal_->log(level, text);
  if (!to_link) return;
  msg::Log::Fields m{};
  m.level = static_cast<uint8_t>(level);
  send(MsgType::kLog, tx_payload_, msg::Log::encode(m, text, tx_payload_));
}

}  // namespace tinyfed
