// The device tests' harness: a fake HAL that records every frame the board writes, and the
// host's side of the link (frames, transfers in windows). Each test program includes it once
// (its definitions are private to that program).
#pragma once
#include <stdio.h>
#include <string.h>

#include "device.h"
#include "link.h"

namespace {

using namespace tinyfed;
using namespace tinyfed::link;

// ---- a fake HAL -------------------------------------------------------------------------

struct OutFrame {
  uint8_t type;
  uint16_t seq;
  uint16_t length;
  uint8_t payload[kMaxPayload];
};

class FakeHal final : public Hal {
 public:
  static constexpr size_t kRxCap = 64 * 1024;
  static constexpr size_t kOutCap = 512;

  uint32_t now = 1000;
  uint8_t rx[kRxCap];
  size_t rx_len = 0, rx_pos = 0;
  OutFrame out[kOutCap];
  size_t out_count = 0;
  FrameParser out_parser;
  int out_errors = 0;
  uint8_t buttons_now = 0;
  uint8_t leds_now = 0;
  bool recording = false;
  bool mic_finished = false;
  int16_t* mic_buf = nullptr;
  const int16_t* mic_clip = nullptr;
  uint32_t next_random = 0x1234u;
  int reboots = 0;
  size_t out_at_reboot = 0;  // frames written before the last reboot()
  bool mic_fails = false;    // mic_start() refuses
  int mic_starts = 0, mic_stops = 0;
  size_t room = kLinkRoomUnlimited;  // link_room(); each written frame uses its bytes
  bool switched = false;             // link_switched() reports this once
  uint8_t led_history[4096];
  size_t led_changes = 0;

  void inject(const uint8_t* data, size_t n) {
    memcpy(rx + rx_len, data, n);
    rx_len += n;
  }
  void clear_out() { out_count = 0; }
  const OutFrame* find(MsgType t, size_t nth = 0) const {
    for (size_t i = 0; i < out_count; ++i) {
      if (out[i].type == static_cast<uint8_t>(t) && nth-- == 0) return &out[i];
    }
    return nullptr;
  }
  size_t count(MsgType t) const {
    size_t n = 0;
    for (size_t i = 0; i < out_count; ++i) n += out[i].type == static_cast<uint8_t>(t);
    return n;
  }

  uint32_t millis() override { return now; }
  size_t link_read(uint8_t* buf, size_t cap) override {
    size_t n = rx_len - rx_pos;
    if (n > cap) n = cap;
    memcpy(buf, rx + rx_pos, n);
    rx_pos += n;
    if (rx_pos == rx_len) rx_pos = rx_len = 0;
    return n;
  }
  size_t link_room() override { return room; }
  bool link_switched() override {
    const bool s = switched;
    switched = false;
    return s;
  }
  void link_write(const uint8_t* data, size_t n) override {
    if (room != kLinkRoomUnlimited) {
      if (n > room) {
        ++dropped;
        return;  // dropped whole, as a full queue does
      }
      room -= n;
    }
    for (size_t i = 0; i < n; ++i) {
      const FrameParser::Event ev = out_parser.push(data[i]);
      if (ev == FrameParser::Event::kFrame && out_count < kOutCap) {
        OutFrame& o = out[out_count++];
        o.type = out_parser.frame().type;
        o.seq = out_parser.frame().seq;
        o.length = out_parser.frame().length;
        memcpy(o.payload, out_parser.frame().payload, o.length);
      } else if (ev == FrameParser::Event::kError) {
        ++out_errors;
      }
    }
  }
  uint8_t buttons() override { return buttons_now; }
  void set_leds(uint8_t leds) override {
    leds_now = leds;
    if (led_changes < sizeof led_history) led_history[led_changes++] = leds;
  }
  // How often the LEDs were switched to exactly `leds` since the history was cleared.
  int times_lit(uint8_t leds) const {
    int n = 0;
    for (size_t i = 0; i < led_changes; ++i) n += led_history[i] == leds;
    return n;
  }
  bool mic_start(int16_t* buf, size_t n) override {
    ++mic_starts;
    if (mic_fails) return false;
    if (mic_clip != nullptr) memcpy(buf, mic_clip, n * sizeof *buf);
    mic_buf = buf;
    recording = true;
    mic_finished = false;
    return true;
  }
  bool mic_done() override { return mic_finished; }
  void mic_stop() override {
    ++mic_stops;
    recording = false;
  }
  int dropped = 0;
  uint32_t random32() override { return next_random++; }
  void board_id(uint8_t o[8]) override {
    for (int i = 0; i < 8; ++i) o[i] = static_cast<uint8_t>(0xB0 + i);
  }
  uint8_t hello_flags() override { return 1; }
  void log(LogLevel, const char*) override {}
  void reboot() override {
    ++reboots;
    out_at_reboot = out_count;
  }
};

FakeHal g_hal;
Device g_dev;
uint16_t g_seq = 100;

// Builds and injects one frame; returns its seq.
uint16_t send(MsgType type, const uint8_t* payload, size_t n) {
  uint8_t wire[kMaxFrameWire];
  const size_t w = encode_frame(static_cast<uint8_t>(type), g_seq, payload, n, wire, sizeof wire);
  g_hal.inject(wire, w);
  return g_seq++;
}

void run(int polls = 3, uint32_t step_ms = 1) {
  for (int i = 0; i < polls; ++i) {
    g_dev.poll();
    g_hal.now += step_ms;
  }
}

uint16_t begin_xfer(XferTarget target, uint32_t len, uint32_t crc, uint32_t meta) {
  uint8_t p[msg::XferBegin::kFixedSize];
  put_u8(p, msg::XferBegin::kTarget, static_cast<uint8_t>(target));
  put_u32(p, msg::XferBegin::kTotalLen, len);
  put_u32(p, msg::XferBegin::kCrc32, crc);
  put_u32(p, msg::XferBegin::kMeta, meta);
  return send(MsgType::kXferBegin, p, sizeof p);
}

void chunk(const uint8_t* data, uint32_t offset, uint32_t n) {
  uint8_t p[kMaxPayload];
  put_u32(p, msg::XferChunk::kOffset, offset);
  memcpy(p + msg::XferChunk::kFixedSize, data + offset, n);
  send(MsgType::kXferChunk, p, msg::XferChunk::kFixedSize + n);
}

// Sends data[from, to) in full chunks, polling after every window like a host would.
void send_chunks(const uint8_t* data, uint32_t from, uint32_t to) {
  uint32_t off = from;
  int in_window = 0;
  while (off < to) {
    const uint32_t n = (to - off) < kChunkBytes ? (to - off) : static_cast<uint32_t>(kChunkBytes);
    chunk(data, off, n);
    off += n;
    if (++in_window == kDefaultWindow) {
      run(1);
      in_window = 0;
    }
  }
  run(1);
}

bool error_is(const OutFrame* f, ErrorCode code, uint16_t ref_seq) {
  return f != nullptr && f->length > msg::Error::kFixedSize &&
         f->payload[msg::Error::kCode] == static_cast<uint8_t>(code) &&
         get_u16(f->payload, msg::Error::kRefSeq) == ref_seq;
}

bool acked(uint16_t seq, MsgType type) {
  for (size_t i = 0; i < g_hal.out_count; ++i) {
    const OutFrame& f = g_hal.out[i];
    if (f.type == static_cast<uint8_t>(MsgType::kAck) &&
        get_u16(f.payload, msg::Ack::kRefSeq) == seq &&
        f.payload[msg::Ack::kRefType] == static_cast<uint8_t>(type)) {
      return true;
    }
  }
  return false;
}

}  // namespace
