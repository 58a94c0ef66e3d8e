// The device state machine; see device.h.
#include "device.h"

#include <math.h>
#include <string.h>

#include "align.h"
#include "text.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "models travel as little-endian float32 and are copied as-is: little-endian CPUs only"
#endif

namespace tinyfed {

using link::ErrorCode;
using link::MsgType;
using link::Source;
using link::State;
using link::XferTarget;
namespace msg = link::msg;

namespace {

// Upper bound of bytes taken from the link per poll, so a flood cannot starve the buttons:
// 16 full frames, two windows.
constexpr size_t kMaxRxPerPoll = 16 * link::kMaxFrameWire;
// MODEL_CHUNK frames sent per poll while answering READ: one window (spec.py DEFAULT_WINDOW).
constexpr uint16_t kReadChunksPerPoll = link::kDefaultWindow;
// Largest learning rate SET_PARAMS accepts (spec.py SetParams: lr in (0, 10]).
constexpr float kMaxLearningRate = 10.0f;

const char* state_name(State s) {
  switch (s) {
    case State::kIdle: return "IDLE";
    case State::kArmed: return "ARMED";
    case State::kRecording: return "RECORDING";
    case State::kComputing: return "COMPUTING";
    case State::kReceiving: return "RECEIVING";
  }
  return "?";
}

const char* type_name(uint8_t type) {
  switch (static_cast<MsgType>(type)) {
    case MsgType::kHelloReq: return "HELLO_REQ";
    case MsgType::kSetParams: return "SET_PARAMS";
    case MsgType::kXferBegin: return "XFER_BEGIN";
    case MsgType::kXferChunk: return "XFER_CHUNK";
    case MsgType::kXferEnd: return "XFER_END";
    case MsgType::kXferAbort: return "XFER_ABORT";
    case MsgType::kGetModel: return "GET_MODEL";
    case MsgType::kRead: return "READ";
    case MsgType::kReset: return "RESET";
    case MsgType::kHello: return "HELLO";
    case MsgType::kAck: return "ACK";
    case MsgType::kError: return "ERROR";
    case MsgType::kXferAck: return "XFER_ACK";
    case MsgType::kModelInfo: return "MODEL_INFO";
    case MsgType::kModelChunk: return "MODEL_CHUNK";
    case MsgType::kLoss: return "LOSS";
    case MsgType::kInfer: return "INFER";
    case MsgType::kState: return "STATE";
    case MsgType::kLog: return "LOG";
  }
  return nullptr;
}

const char* target_name(XferTarget t) {
  switch (t) {
    case XferTarget::kModel: return "MODEL";
    case XferTarget::kFeatures: return "FEATURES";
    case XferTarget::kAudio: return "AUDIO";
  }
  return "?";
}

// Host-to-board commands: fixed payload size and largest tail (from link_spec.h).
struct CommandShape {
  MsgType type;
  size_t fixed;
  size_t tail_max;
};
constexpr CommandShape kCommands[] = {
    {MsgType::kHelloReq, msg::HelloReq::kFixedSize, msg::HelloReq::kTailMax},
    {MsgType::kSetParams, msg::SetParams::kFixedSize, msg::SetParams::kTailMax},
    {MsgType::kXferBegin, msg::XferBegin::kFixedSize, msg::XferBegin::kTailMax},
    {MsgType::kXferChunk, msg::XferChunk::kFixedSize, msg::XferChunk::kTailMax},
    {MsgType::kXferEnd, msg::XferEnd::kFixedSize, msg::XferEnd::kTailMax},
    {MsgType::kXferAbort, msg::XferAbort::kFixedSize, msg::XferAbort::kTailMax},
    {MsgType::kGetModel, msg::GetModel::kFixedSize, msg::GetModel::kTailMax},
    {MsgType::kRead, msg::Read::kFixedSize, msg::Read::kTailMax},
    {MsgType::kReset, msg::Reset::kFixedSize, msg::Reset::kTailMax},
};

// True unless the float32 bit pattern is NaN or infinity (exponent all ones). Bit test, so it
// holds whatever the compiler's floating-point flags.
bool finite_bits(const uint8_t* p) {
  const uint32_t u = link::get_u32(p, 0);
  return (u & 0x7F800000u) != 0x7F800000u;
}

// Index of the first non-finite float32 in n little-endian values, or -1.
int32_t first_non_finite(const uint8_t* p, uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) {
    if (!finite_bits(p + 4 * i)) return static_cast<int32_t>(i);
  }
  return -1;
}

// What each button does, for log lines (README "Wiring").
const char* button_role(int button) {
  static const char* const kRoles[kButtons] = {"train keyword 1", "train keyword 2",
                                               "train keyword 3", "infer"};
  return kRoles[button];
}

uint8_t colour_of(int button) {
  static constexpr uint8_t kColours[kButtons] = {kLedRed, kLedGreen, kLedBlue,
                                                 kLedRed | kLedGreen | kLedBlue};
  return kColours[button];
}

uint32_t target_size(XferTarget t) {
  switch (t) {
    case XferTarget::kModel: return kModelBytes;
    case XferTarget::kFeatures: return kFeatureBytes;
    case XferTarget::kAudio: return kAudioBytes;
  }
  return 0;
}

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
  if (config.pipeline != link::PipelineId::kPaper &&
      config.pipeline != link::PipelineId::kCentroid) {
    return Status::kBadArgument;
  }
  hal_ = hal;
  config_ = config;
  Status s = nn_init_params(params_, config.seed);
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
      .str(config.pipeline == link::PipelineId::kPaper ? "paper" : "centroid");
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

// ---------------------------------------------------------------------------- link input

void Device::handle_frame(const link::Frame& f) {
  const CommandShape* shape = nullptr;
  for (const CommandShape& c : kCommands) {
    if (static_cast<uint8_t>(c.type) == f.type) shape = &c;
  }
  if (shape == nullptr) {
    Text t;
    const char* name = type_name(f.type);
    if (name != nullptr) {
      t.str("frame type ").str(name).str(" is board-to-host");
    } else {
      t.str("unknown frame type 0x").hex(f.type, 2);
    }
    send_error(f.seq, ErrorCode::kUnknownType, t.c_str());
    return;
  }
  if (f.length < shape->fixed || f.length > shape->fixed + shape->tail_max) {
    Text t;
    t.str(type_name(f.type)).str(" payload of ").u32(f.length).str(" bytes, expected ")
        .u32(static_cast<uint32_t>(shape->fixed));
    if (shape->tail_max > 0) t.str(" + up to ").u32(static_cast<uint32_t>(shape->tail_max));
    send_error(f.seq, ErrorCode::kBadLength, t.c_str());
    return;
  }
  switch (static_cast<MsgType>(f.type)) {
    case MsgType::kHelloReq: on_hello_req(f); break;
    case MsgType::kSetParams: on_set_params(f); break;
    case MsgType::kXferBegin: on_xfer_begin(f); break;
    case MsgType::kXferChunk: on_xfer_chunk(f); break;
    case MsgType::kXferEnd: on_xfer_end(f); break;
    case MsgType::kXferAbort: on_xfer_abort(f); break;
    case MsgType::kGetModel: on_get_model(f); break;
    case MsgType::kRead: on_read(f); break;
    case MsgType::kReset: on_reset(f); break;
    default: break;  // not in kCommands
  }
}

void Device::on_hello_req(const link::Frame&) { send_hello(); }

void Device::on_set_params(const link::Frame& f) {
  const float lr = link::get_f32(f.payload, msg::SetParams::kLr);
  const float momentum = link::get_f32(f.payload, msg::SetParams::kMomentum);
  const uint16_t steps = link::get_u16(f.payload, msg::SetParams::kLocalSteps);
  if (!params_valid(lr, momentum, steps)) {
    Text t;
    t.str("lr ").f32(lr).str(" momentum ").f32(momentum).str(" local_steps ").u32(steps)
        .str(": need lr in (0, 10], momentum in [0, 1), local_steps >= 1");
    send_error(f.seq, ErrorCode::kBadArgument, t.c_str());
    return;
  }
  lr_ = lr;
  momentum_ = momentum;
  local_steps_ = steps;
  Text t;
  t.str("params lr=").f32(lr).str(" momentum=").f32(momentum).str(" local_steps=").u32(steps);
  log_line(LogLevel::kInfo, t.c_str(), true);
  send_ack(f.seq, f.type);
}

void Device::on_xfer_begin(const link::Frame& f) {
  const uint8_t target_raw = link::get_u8(f.payload, msg::XferBegin::kTarget);
  const uint32_t total = link::get_u32(f.payload, msg::XferBegin::kTotalLen);
  const uint32_t crc = link::get_u32(f.payload, msg::XferBegin::kCrc32);
  const uint32_t meta = link::get_u32(f.payload, msg::XferBegin::kMeta);
  if (state_ == State::kArmed || state_ == State::kRecording || state_ == State::kComputing) {
    Text t;
    t.str("board is ").str(state_name(state_)).str("; retry later");
    send_error(f.seq, ErrorCode::kBusy, t.c_str());
    return;
  }
  if (target_raw < static_cast<uint8_t>(XferTarget::kModel) ||
      target_raw > static_cast<uint8_t>(XferTarget::kAudio)) {
    Text t;
    t.str("unknown transfer target ").u32(target_raw);
    send_error(f.seq, ErrorCode::kBadArgument, t.c_str());
    return;
  }
  const XferTarget target = static_cast<XferTarget>(target_raw);
  if (total != target_size(target)) {
    Text t;
    t.str(target_name(target)).str(" transfer of ").u32(total).str(" bytes, expected ")
        .u32(target_size(target));
    send_error(f.seq, ErrorCode::kBadArgument, t.c_str());
    return;
  }
  if (target != XferTarget::kModel && meta >= static_cast<uint32_t>(kOutputs) &&
      meta != link::kNoClass) {
    Text t;
    t.str("label ").u32(meta).str(" outside 0..2 (255: infer only)");
    send_error(f.seq, ErrorCode::kBadArgument, t.c_str());
    return;
  }
  if (xfer_.open) {
    // A new BEGIN replaces an open transfer: a host that lost our reply simply starts over.
    log_line(LogLevel::kWarn, "XFER_BEGIN while a transfer was open: the old one is abandoned",
             true);
    close_transfer(true);
  }
  xfer_ = Transfer{};
  xfer_.open = true;
  xfer_.target = target;
  xfer_.total_len = total;
  xfer_.crc32 = crc;
  xfer_.meta = meta;
  xfer_.last_ms = now_;
  if (target == XferTarget::kModel) {
    // The momentum buffer becomes the staging area: momentum restarts at zero with every
    // model download, whatever its outcome (device.h).
    memset(velocity_, 0, sizeof velocity_);
  }
  set_state(State::kReceiving);
  set_leds(kLedBusy);  // the built-in LED while a transfer runs (the paper's exchange LED)
  Text t;
  t.str("transfer ").str(target_name(target)).str(" begins: ").u32(total).str(" bytes, meta ")
      .u32(meta);
  log_line(LogLevel::kInfo, t.c_str(), true);
  send_ack(f.seq, f.type);
}

uint8_t* Device::staging(XferTarget target) {
  if (target == XferTarget::kModel) return reinterpret_cast<uint8_t*>(velocity_);
  return reinterpret_cast<uint8_t*>(audio_);
}

void Device::on_xfer_chunk(const link::Frame& f) {
  if (!xfer_.open) {
    send_error(f.seq, ErrorCode::kBadState, "XFER_CHUNK with no transfer open");
    return;
  }
  const uint32_t offset = link::get_u32(f.payload, msg::XferChunk::kOffset);
  const uint32_t len = f.length - static_cast<uint32_t>(msg::XferChunk::kFixedSize);
  if (len == 0) {
    send_error(f.seq, ErrorCode::kBadLength, "XFER_CHUNK with no data");
    return;
  }
  if (offset > xfer_.total_len || len > xfer_.total_len - offset) {
    Text t;
    t.str("chunk at ").u32(offset).str(" of ").u32(len).str(" bytes runs past the end ")
        .u32(xfer_.total_len);
    send_error(f.seq, ErrorCode::kBadArgument, t.c_str());
    return;
  }
  xfer_.last_ms = now_;
  const uint32_t end = offset + len;
  if (offset > xfer_.next) {  // a gap: go-back-N, tell the host once where we are
    if (!xfer_.gap_acked) {
      xfer_.gap_acked = true;
      send_xfer_ack(xfer_.next);
    }
    return;
  }
  if (end <= xfer_.next) {  // a duplicate: ignored, but re-acknowledged if it ends a window
    if (end == xfer_.last_ack) send_xfer_ack(xfer_.next);
    return;
  }
  const uint32_t skip = xfer_.next - offset;  // bytes of this chunk we already hold
  memcpy(staging(xfer_.target) + xfer_.next, f.payload + msg::XferChunk::kFixedSize + skip,
         len - skip);
  xfer_.next = end;
  xfer_.gap_acked = false;
  ++xfer_.since_ack;
  if (xfer_.since_ack >= link::kDefaultWindow || xfer_.next == xfer_.total_len) {
    send_xfer_ack(xfer_.next);
  }
}

void Device::on_xfer_end(const link::Frame& f) {
  if (!xfer_.open) {
    send_error(f.seq, ErrorCode::kBadState, "XFER_END with no transfer open");
    return;
  }
  xfer_.last_ms = now_;
  if (xfer_.next != xfer_.total_len) {
    Text t;
    t.str("transfer incomplete: ").u32(xfer_.next).str(" of ").u32(xfer_.total_len)
        .str(" bytes; send the rest or XFER_ABORT");
    send_error(f.seq, ErrorCode::kBadState, t.c_str());
    return;
  }
  const XferTarget target = xfer_.target;
  const uint8_t* data = staging(target);
  const uint32_t crc = link::crc32(data, xfer_.total_len);
  if (crc != xfer_.crc32) {
    Text t;
    t.str(target_name(target)).str(" CRC-32 0x").hex(crc, 8).str(", expected 0x")
        .hex(xfer_.crc32, 8).str("; discarded");
    close_transfer(true);
    log_line(LogLevel::kWarn, t.c_str(), false);
    send_error(f.seq, ErrorCode::kChecksum, t.c_str());
    return;
  }
  if (target == XferTarget::kModel || target == XferTarget::kFeatures) {
    const int32_t bad = first_non_finite(data, xfer_.total_len / 4);
    if (bad >= 0) {
      Text t;
      t.str(target_name(target)).str(" value ").i32(bad).str(" is not finite; discarded");
      close_transfer(true);
      log_line(LogLevel::kWarn, t.c_str(), false);
      send_error(f.seq, ErrorCode::kNonFinite, t.c_str());
      return;
    }
  }
  const uint32_t meta = xfer_.meta;
  switch (target) {
    case XferTarget::kModel: {
      // The atomic switch: the verified staging copy replaces the weights in one step of the
      // main loop (nothing else reads or writes them in between), then momentum restarts.
      memcpy(params_, velocity_, kModelBytes);
      memset(velocity_, 0, sizeof velocity_);
      model_round_ = meta;
      steps_since_global_ = 0;
      ++models_applied_;
      close_transfer(false);
      Text t;
      t.str("model of round ").u32(meta).str(" applied (crc 0x").hex(crc, 8)
          .str("); momentum reset");
      log_line(LogLevel::kInfo, t.c_str(), true);
      send_ack(f.seq, f.type);
      break;
    }
    case XferTarget::kFeatures:
      memcpy(features_, data, kFeatureBytes);
      close_transfer(false);
      send_ack(f.seq, f.type);
      set_state(State::kComputing);
      compute(static_cast<uint8_t>(meta), Source::kHost, f.seq, false);
      break;
    case XferTarget::kAudio:
      close_transfer(false);
      send_ack(f.seq, f.type);
      pending_ = Pending::kHostAudio;
      pending_label_ = static_cast<uint8_t>(meta);
      pending_ref_seq_ = f.seq;
      set_state(State::kComputing);
      set_leds(kLedBusy);
      break;
  }
}

void Device::on_xfer_abort(const link::Frame& f) {
  if (xfer_.open) {
    Text t;
    t.str("transfer of ").str(target_name(xfer_.target)).str(" aborted by the host at ")
        .u32(xfer_.next).str(" bytes");
    close_transfer(true);
    log_line(LogLevel::kInfo, t.c_str(), true);
  }
  send_ack(f.seq, f.type);  // idempotent: aborting nothing is fine
}

void Device::close_transfer(bool failed) {
  if (failed && xfer_.target == XferTarget::kModel) {
    memset(velocity_, 0, sizeof velocity_);  // the staging leftovers are not a momentum
  }
  xfer_.open = false;
  if (state_ == State::kReceiving) {
    set_leds(0);
    set_state(State::kIdle);
  }
}

void Device::on_get_model(const link::Frame& f) {
  upload_ms_ = now_;
  upload_seen_ = true;
  uint8_t* p = tx_payload_;
  link::put_u16(p, msg::ModelInfo::kRefSeq, f.seq);
  link::put_u32(p, msg::ModelInfo::kTotalLen, kModelBytes);
  link::put_u32(p, msg::ModelInfo::kCrc32,
                link::crc32(reinterpret_cast<const uint8_t*>(params_), kModelBytes));
  link::put_u32(p, msg::ModelInfo::kModelRound, model_round_);
  link::put_u32(p, msg::ModelInfo::kStepsSinceGlobal, steps_since_global_);
  link::put_u32(p, msg::ModelInfo::kTotalSteps, total_steps_);
  send(MsgType::kModelInfo, p, msg::ModelInfo::kFixedSize);
}

void Device::on_read(const link::Frame& f) {
  const uint32_t offset = link::get_u32(f.payload, msg::Read::kOffset);
  const uint8_t count = link::get_u8(f.payload, msg::Read::kCount);
  if (count == 0 || offset >= kModelBytes) {
    Text t;
    t.str("READ of ").u32(count).str(" chunks at ").u32(offset).str(": need count >= 1 and ")
        .str("offset < ").u32(kModelBytes);
    send_error(f.seq, ErrorCode::kBadArgument, t.c_str());
    return;
  }
  upload_ms_ = now_;
  upload_seen_ = true;
  read_offset_ = offset;  // a new READ replaces one still being answered
  read_left_ = count;
  poll_read();
}

void Device::on_reset(const link::Frame& f) {
  send_ack(f.seq, f.type);
  log_line(LogLevel::kInfo, "reset requested by the host: rebooting", true);
  // The reboot happens kResetDelayMs later, from poll(): the ACK must leave first.
  reset_pending_ = true;
  reset_ms_ = now_;
  read_left_ = 0;
}

// ---------------------------------------------------------------------------- buttons etc.

void Device::poll_buttons(uint32_t now) {
  const uint8_t raw = static_cast<uint8_t>(hal_->buttons() & 0x0F);
  if (raw != btn_raw_) {
    btn_raw_ = raw;
    btn_changed_ms_ = now;
  }
  if (armed_ == 3 && !round_request_ && now - armed_ms_ >= kRoundRequestHoldMs) {
    // The infer button held long: releasing it now asks for a round instead of recording.
    round_request_ = true;
    set_leds(kLedRed | kLedGreen | kLedBlue | kLedBusy);
    log_line(LogLevel::kInfo, "button D5 held: release to ask the gateway for a round", true);
  }
  if (raw == btn_stable_ || now - btn_changed_ms_ < kDebounceMs) return;
  const uint8_t changed = static_cast<uint8_t>(raw ^ btn_stable_);
  btn_stable_ = raw;
  for (int b = 0; b < kButtons; ++b) {
    if (!(changed & (1u << b))) continue;
    if (raw & (1u << b)) {
      on_press(b);
    } else {
      on_release(b);
    }
  }
}

void Device::on_press(int button) {
  Text t;
  t.str("button D").u32(static_cast<uint32_t>(button + 2)).str(" (").str(button_role(button))
      .str(") pressed");
  if (armed_ >= 0 || state_ != State::kIdle) {
    t.str("; ignored, board is ").str(state_name(state_));
    log_line(LogLevel::kInfo, t.c_str(), true);
    return;
  }
  t.str(": release to record one second");
  log_line(LogLevel::kInfo, t.c_str(), true);
  armed_ = button;
  armed_ms_ = now_;
  round_request_ = false;
  blink_left_ = 0;
  set_state(State::kArmed);
  set_leds(colour_of(button));
}

void Device::on_release(int button) {
  if (button != armed_) return;
  armed_ = -1;
  if (round_request_) {
    round_request_ = false;
    set_leds(0);
    set_state(State::kIdle);
    request_round(now_ - armed_ms_);
    return;
  }
  Text t;
  t.str("button D").u32(static_cast<uint32_t>(button + 2)).str(" released: recording one second");
  log_line(LogLevel::kInfo, t.c_str(), true);
  if (!hal_->mic_start(audio_, kRecordSamples)) {
    log_line(LogLevel::kError, "microphone failed to start: no recording (check the board's "
             "boot log)", true);
    set_leds(0);
    set_state(State::kIdle);
    return;
  }
  pending_ = Pending::kButton;
  pending_label_ = button < kOutputs ? static_cast<uint8_t>(button) : link::kNoClass;
  pending_ref_seq_ = 0;
  record_ms_ = now_;
  set_state(State::kRecording);
  set_leds(kLedBusy);
}

void Device::request_round(uint32_t held_ms) {
  // LOG, level info, text "event round_request button=D5 held_ms=N round=R steps=S": the
  // gateway matches the prefix kRoundRequestEvent and may start a federated round for all
  // boards (README "Ask for a round now"). Acknowledged on the board by two white blinks.
  Text t;
  t.str(kRoundRequestEvent).str(" button=D5 held_ms=").u32(held_ms).str(" round=")
      .u32(model_round_).str(" steps=").u32(steps_since_global_);
  log_line(LogLevel::kInfo, t.c_str(), true);
  start_blink(kLedRed | kLedGreen | kLedBlue, 2);
}

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
  if (from_audio) {
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
  float outputs[kOutputs] = {0.0f, 0.0f, 0.0f};
  float loss = 0.0f;
  const bool train = label != link::kNoClass;
  if (ok(s)) {
    stage = train ? "training step" : "inference";
    s = train ? nn_train_step(params_, velocity_, features_, label, lr_, momentum_, &loss,
                              outputs)
              : nn_forward(params_, features_, outputs);
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
  const int detected = nn_detect(outputs);
  Text t;
  if (train) {
    ++total_steps_;
    ++steps_since_global_;
    uint8_t* p = tx_payload_;
    link::put_u32(p, msg::Loss::kStep, total_steps_);
    link::put_f32(p, msg::Loss::kLoss, loss);
    link::put_u8(p, msg::Loss::kLabel, label);
    for (int i = 0; i < kOutputs; ++i) {
      link::put_f32(p, msg::Loss::kOutputs + 4 * static_cast<size_t>(i), outputs[i]);
    }
    link::put_u32(p, msg::Loss::kModelRound, model_round_);
    link::put_u32(p, msg::Loss::kStepsSinceGlobal, steps_since_global_);
    link::put_u8(p, msg::Loss::kSource, static_cast<uint8_t>(source));
    send(MsgType::kLoss, p, msg::Loss::kFixedSize);
    t.str("loss step=").u32(total_steps_).str(" label=").u32(label).str(" loss=").f32(loss);
  } else {
    uint8_t* p = tx_payload_;
    for (int i = 0; i < kOutputs; ++i) {
      link::put_f32(p, msg::Infer::kOutputs + 4 * static_cast<size_t>(i), outputs[i]);
    }
    link::put_u8(p, msg::Infer::kPrediction,
                 detected >= 0 ? static_cast<uint8_t>(detected) : link::kNoClass);
    link::put_u8(p, msg::Infer::kSource, static_cast<uint8_t>(source));
    send(MsgType::kInfer, p, msg::Infer::kFixedSize);
    t.str("infer prediction=").i32(detected);
  }
  t.str(" outputs=").f32(outputs[0]).str(",").f32(outputs[1]).str(",").f32(outputs[2])
      .str(" source=").str(source == Source::kHost ? "host" : "button");
  log_line(LogLevel::kInfo, t.c_str(), false);
  // The paper: the class whose output is highest and above 0.6 (nn_detect) shows its colour;
  // its inference button blinks it five times. Nothing above 0.6: no colour.
  if (detected >= 0) start_blink(colour_of(detected), train ? kTrainBlinkCount : kInferBlinkCount);
}

void Device::poll_read() {
  uint16_t sent = 0;
  // Only while the link takes a whole frame now: a slow link delays the upload, it does not
  // lose chunks (Hal::link_room).
  while (read_left_ > 0 && sent < kReadChunksPerPoll &&
         hal_->link_room() >= link::kMaxFrameWire) {
    const uint32_t n32 = kModelBytes - read_offset_;
    const size_t n = n32 < link::kChunkBytes ? n32 : link::kChunkBytes;
    uint8_t* p = tx_payload_;
    link::put_u32(p, msg::ModelChunk::kOffset, read_offset_);
    memcpy(p + msg::ModelChunk::kFixedSize,
           reinterpret_cast<const uint8_t*>(params_) + read_offset_, n);
    send(MsgType::kModelChunk, p, msg::ModelChunk::kFixedSize + n);
    read_offset_ += static_cast<uint32_t>(n);
    --read_left_;
    ++sent;
    if (read_offset_ >= kModelBytes) read_left_ = 0;
  }
}

void Device::start_blink(uint8_t leds, uint8_t count) {
  blink_leds_ = leds;
  blink_left_ = static_cast<uint8_t>(2 * count);  // half-periods: on, off, on, off, ...
  blink_ms_ = now_;
  set_leds(leds);
}

void Device::poll_blink(uint32_t now) {
  if (blink_left_ == 0 || now - blink_ms_ < kBlinkMs) return;
  blink_ms_ = now;
  --blink_left_;
  const bool on = blink_left_ > 0 && (blink_left_ % 2) == 0;
  set_leds(on ? blink_leds_ : 0);
}

void Device::poll_idle_leds() {
  // In IDLE with no result blinking, the built-in LED shows an upload in progress.
  if (state_ != State::kIdle || armed_ >= 0 || blink_left_ != 0) return;
  const bool uploading = read_left_ > 0 || (upload_seen_ && now_ - upload_ms_ < kUploadLedHoldMs);
  if (!uploading) upload_seen_ = false;
  set_leds(uploading ? kLedBusy : 0);
}

void Device::set_state(State s) {
  if (s == state_) return;
  if (s != State::kIdle) blink_left_ = 0;
  state_ = s;
  Text t;
  t.str("state ").str(state_name(s));
  hal_->log(LogLevel::kDebug, t.c_str());
}

void Device::set_leds(uint8_t leds) {
  if (leds == leds_) return;
  leds_ = leds;
  hal_->set_leds(leds);
}

void Device::flush_state() {
  const uint8_t s = static_cast<uint8_t>(state_);
  if (s == state_sent_ && leds_ == leds_sent_) return;
  state_sent_ = s;
  leds_sent_ = leds_;
  uint8_t* p = tx_payload_;
  link::put_u8(p, msg::State::kState, s);
  link::put_u8(p, msg::State::kLed, leds_);
  send(MsgType::kState, p, msg::State::kFixedSize);
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
  uint8_t* p = tx_payload_;
  uint8_t id[8];
  hal_->board_id(id);
  link::put_u8(p, msg::Hello::kProtocol, link::kProtocolVersion);
  link::put_u32(p, msg::Hello::kBootId, boot_id_);
  memcpy(p + msg::Hello::kBoardId, id, sizeof id);
  for (size_t i = 0; i < 3; ++i) p[msg::Hello::kFwVersion + i] = kFwVersion[i];
  link::put_u16(p, msg::Hello::kArch, static_cast<uint16_t>(link::ArchId::kFc650163));
  link::put_u8(p, msg::Hello::kPipeline, static_cast<uint8_t>(config_.pipeline));
  link::put_f32(p, msg::Hello::kLr, lr_);
  link::put_f32(p, msg::Hello::kMomentum, momentum_);
  link::put_u16(p, msg::Hello::kLocalSteps, local_steps_);
  link::put_u32(p, msg::Hello::kModelRound, model_round_);
  link::put_u32(p, msg::Hello::kStepsSinceGlobal, steps_since_global_);
  link::put_u32(p, msg::Hello::kTotalSteps, total_steps_);
  link::put_u8(p, msg::Hello::kState, static_cast<uint8_t>(state_));
  link::put_u8(p, msg::Hello::kWindow, link::kDefaultWindow);
  link::put_u16(p, msg::Hello::kChunkBytes, static_cast<uint16_t>(link::kChunkBytes));
  link::put_u8(p, msg::Hello::kFlags, hal_->hello_flags());
  send(MsgType::kHello, p, msg::Hello::kFixedSize);
}

void Device::send_ack(uint16_t ref_seq, uint8_t ref_type) {
  uint8_t* p = tx_payload_;
  link::put_u16(p, msg::Ack::kRefSeq, ref_seq);
  link::put_u8(p, msg::Ack::kRefType, ref_type);
  send(MsgType::kAck, p, msg::Ack::kFixedSize);
}

void Device::send_error(uint16_t ref_seq, ErrorCode code, const char* text) {
  uint8_t* p = tx_payload_;
  link::put_u16(p, msg::Error::kRefSeq, ref_seq);
  link::put_u8(p, msg::Error::kCode, static_cast<uint8_t>(code));
  size_t n = strlen(text);
  if (n > msg::Error::kTailMax) n = msg::Error::kTailMax;
  memcpy(p + msg::Error::kFixedSize, text, n);
  send(MsgType::kError, p, msg::Error::kFixedSize + n);
  Text t;
  t.str("error ").str(link::error_name(code)).str(": ").str(text);
  hal_->log(LogLevel::kWarn, t.c_str());
}

void Device::send_xfer_ack(uint32_t next_offset) {
  xfer_.last_ack = next_offset;
  xfer_.since_ack = 0;
  uint8_t* p = tx_payload_;
  link::put_u32(p, msg::XferAck::kNextOffset, next_offset);
  send(MsgType::kXferAck, p, msg::XferAck::kFixedSize);
}

void Device::log_line(LogLevel level, const char* text, bool to_link) {
  hal_->log(level, text);
  if (!to_link) return;
  uint8_t* p = tx_payload_;
  link::put_u8(p, msg::Log::kLevel, static_cast<uint8_t>(level));
  size_t n = strlen(text);
  if (n > msg::Log::kTailMax) n = msg::Log::kTailMax;
  memcpy(p + msg::Log::kFixedSize, text, n);
  send(MsgType::kLog, p, msg::Log::kFixedSize + n);
}

}  // namespace tinyfed
