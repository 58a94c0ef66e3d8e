// The device's link commands and host-to-board transfers (reassembly, go-back-N
// acknowledgements, verification, applying a model), and the answers to READ; see device.h.
#include "device.h"

#include <string.h>

#include "device_internal.h"
#include "text.h"

namespace tinyfed {

using device_detail::state_name;
using device_detail::target_name;

namespace {

// MODEL_CHUNK frames sent per poll while answering READ: one window (spec.py DEFAULT_WINDOW).
constexpr uint16_t kReadChunksPerPoll = link::kDefaultWindow;

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

}  // namespace

uint32_t Device::target_size(XferTarget t) const {
  switch (t) {
    case XferTarget::kModel: return model_bytes_;
    case XferTarget::kFeatures: return feature_bytes_;
    case XferTarget::kAudio: return kAudioBytes;
  }
  return 0;
}

void Device::handle_frame(const link::Frame& f) {
  const link::CommandShape* shape = link::command_shape(f.type);
  if (shape == nullptr) {
    Text t;
    const char* name = link::type_name(f.type);
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
    t.str(link::type_name(f.type)).str(" payload of ").u32(f.length).str(" bytes, expected ")
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

void Device::on_hello_req(const link::Frame&) {
  ++hello_requests_;
  send_hello();
}

void Device::on_set_params(const link::Frame& f) {
  const msg::SetParams::Fields m = msg::SetParams::decode(f.payload);
  const float lr = m.lr;
  const float momentum = m.momentum;
  const uint16_t steps = m.local_steps;
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
  const msg::XferBegin::Fields m = msg::XferBegin::decode(f.payload);
  const uint8_t target_raw = m.target;
  const uint32_t total = m.total_len;
  const uint32_t crc = m.crc32;
  const uint32_t meta = m.meta;
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
  const uint32_t offset = msg::XferChunk::decode(f.payload).offset;
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
  // Floats must be finite; the dscnn family's features are int8 (any byte is a value).
  if (target == XferTarget::kModel ||
      (target == XferTarget::kFeatures && config_.arch != link::ArchId::kDscnnHead)) {
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
      memcpy(params_, velocity_, model_bytes_);  // dscnn: the head only; its store stays
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
      memcpy(features_, data, feature_bytes_);
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
  msg::ModelInfo::Fields m{};
  m.ref_seq = f.seq;
  m.total_len = model_bytes_;
  m.crc32 = link::crc32(reinterpret_cast<const uint8_t*>(params_), model_bytes_);
  m.model_round = model_round_;
  m.steps_since_global = steps_since_global_;
  m.total_steps = total_steps_;
  send(MsgType::kModelInfo, tx_payload_, msg::ModelInfo::encode(m, tx_payload_));
}

void Device::on_read(const link::Frame& f) {
  const msg::Read::Fields m = msg::Read::decode(f.payload);
  const uint32_t offset = m.offset;
  const uint8_t count = m.count;
  if (count == 0 || offset >= model_bytes_) {
    Text t;
    t.str("READ of ").u32(count).str(" chunks at ").u32(offset).str(": need count >= 1 and ")
        .str("offset < ").u32(model_bytes_);
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

void Device::poll_read() {
  uint16_t sent = 0;
  // Only while the link takes a whole frame now: a slow link delays the upload, it does not
  // lose chunks (Hal::link_room).
  while (read_left_ > 0 && sent < kReadChunksPerPoll &&
         hal_->link_room() >= link::kMaxFrameWire) {
    const uint32_t n32 = model_bytes_ - read_offset_;
    const size_t n = n32 < link::kChunkBytes ? n32 : link::kChunkBytes;
    msg::ModelChunk::Fields m{};
    m.offset = read_offset_;
    send(MsgType::kModelChunk, tx_payload_,
         msg::ModelChunk::encode(m, reinterpret_cast<const uint8_t*>(params_) + read_offset_, n,
                                 tx_payload_));
    read_offset_ += static_cast<uint32_t>(n);
    --read_left_;
    ++sent;
    if (read_offset_ >= model_bytes_) read_left_ = 0;
  }
}

}  // namespace tinyfed
