// The board HAL (hal/arduino/arduino_hal.cpp) on the host, against fakes of the Arduino mbed
// core, PDM, USB CDC and ArduinoBLE (tests/arduino_fakes.*) that behave like the real
// libraries where the HAL depends on it and misbehave on demand:
//   boot       the boot id is read before BLE.begin(); PDM gain 80 and 4096-byte blocks are
//              set before PDM.begin(); a silent or failed microphone is reported
//   microphone a recording fills from 4096-byte blocks; blocks nobody records are drained (the
//              library stops the PDM otherwise); a dead recording restarts the PDM
//   USB        output never calls Serial's operator bool (delay(1)) or the blocking write();
//              a host that does not read gets whole frames later, never parts; reads are
//              one available() per block
//   BLE        notifications of MTU-3 bytes (20 at MTU 23, 244 at 247), at most 4 per loop, a
//              central that vanishes mid-burst stops the burst; switching transports resyncs
//   buttons    both wirings, and the boot-time detection
//   RESET      through the real Device: the ACK reaches the host (USB and BLE), BLE is
//              disconnected, then NVIC_SystemReset
//   sketch     hal/arduino/main.cpp's setup() and loop(): HELLO, then the boot report as a LOG
//              (level error when the microphone is silent: begin()'s result is used)
//
//   test_arduino_hal [VECTORS_DIR]   (no vectors needed)
#include <stdio.h>
#include <string.h>

#include <Arduino.h>  // tools/arduino_stubs: pin names and modes

#include "../hal/arduino/arduino_hal.h"
#include "arduino_fakes.h"
#include "check.h"
#include "device.h"
#include "link.h"

// hal/arduino/main.cpp
void setup();
void loop();

using namespace tinyfed;
using namespace tinyfed::link;
using tinyfed_test::check;
using tinyfed_test::g_failures;
using tinyfed_test::g_checks;

namespace {

ArduinoHal g_hal;

// Decodes a byte stream into frames; counts frames and decode errors.
struct Stream {
  FrameParser parser;
  int frames = 0, errors = 0;
  uint8_t types[512];
  void feed(const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      const FrameParser::Event ev = parser.push(p[i]);
      if (ev == FrameParser::Event::kFrame) {
        if (frames < 512) types[frames] = parser.frame().type;
        ++frames;
      } else if (ev == FrameParser::Event::kError) {
        ++errors;
      }
    }
  }
  bool saw(MsgType t) const {
    for (int i = 0; i < frames && i < 512; ++i) {
      if (types[i] == static_cast<uint8_t>(t)) return true;
    }
    return false;
  }
};

size_t frame(MsgType type, uint16_t seq, const uint8_t* payload, size_t n, uint8_t* out) {
  return encode_frame(static_cast<uint8_t>(type), seq, payload, n, out, kMaxFrameWire);
}

// A full-size MODEL_CHUNK frame (242 bytes on the wire).
size_t big_frame(uint16_t seq, uint8_t* out) {
  uint8_t p[4 + kChunkBytes];
  for (size_t i = 0; i < sizeof p; ++i) p[i] = static_cast<uint8_t>(i * 7 + seq);
  return frame(MsgType::kModelChunk, seq, p, sizeof p, out);
}

void boot() {
  fake::reset();
  // A working microphone delivers a block while begin() waits for one.
  fake::on_delay = [] { fake::pdm_deliver_block(0); };
  g_hal.begin();
  fake::on_delay = nullptr;
  g_hal.link_switched();
  g_hal.take_notice();
}

void test_boot() {
  printf("boot\n");
  fake::reset();
  fake::on_delay = [] { fake::pdm_deliver_block(0); };
  const bool ok_all = g_hal.begin();
  fake::on_delay = nullptr;
  const int rng = fake::first_event("rng.start");
  const int ble = fake::first_event("ble.begin");
  check(rng >= 0 && ble > rng && fake::first_event("rng.stop") < ble, "boot",
        "the RNG is read (start..stop) before BLE.begin()");
  check(g_hal.random32() == 0xC0FFEE42u, "boot", "random32() is the value read before BLE");
  const int gain = fake::first_event("pdm.setGain 80");
  const int buf = fake::first_event("pdm.setBufferSize 4096");
  const int pdm = fake::first_event("pdm.begin 1 16000 gain 80 buffer 4096");
  check(gain >= 0 && buf >= 0 && pdm > gain && pdm > buf, "boot",
        "PDM: setBufferSize(4096) and setGain(80) before begin(1, 16000)");
  check(ok_all && strstr(g_hal.boot_report(), "microphone ok") != nullptr &&
            strstr(g_hal.boot_report(), "tinyfed-7788") != nullptr,
        "boot", "boot report: microphone ok, BLE name from the board id");
  check(fake::pin_mode[D2] == INPUT_PULLUP && fake::pin_mode[D5] == INPUT_PULLUP, "boot",
        "default wiring: the button pins get the internal pull-ups");

  fake::reset();  // a microphone that never delivers
  const bool ok_silent = g_hal.begin();
  check(!ok_silent && strstr(g_hal.boot_report(), "SILENT") != nullptr, "boot",
        "a silent microphone: begin() false, the boot report says SILENT");
  fake::reset();
  fake::pdm_begin_ok = false;
  g_hal.begin();
  int16_t audio[16];
  check(strstr(g_hal.boot_report(), "FAILED to start") != nullptr && !g_hal.mic_start(audio, 16),
        "boot", "PDM.begin() fails: reported, and mic_start() refuses (the core stays IDLE)");
}

void test_microphone() {
  printf("microphone\n");
  boot();
  static int16_t audio[16000];
  memset(audio, 0, sizeof audio);
  fake::pdm_deliver_block(100);  // not recording: drained
  fake::pdm_deliver_block(200);
  check(!fake::pdm_overflowed && fake::pdm_running, "pdm",
        "blocks nobody records are read empty (no overflow stop)");
  check(g_hal.mic_start(audio, 16000) && !g_hal.mic_done(), "pdm", "recording started");
  int blocks = 0;
  while (!g_hal.mic_done() && blocks < 20) {
    fake::pdm_deliver_block(static_cast<int16_t>(blocks * 2048));
    ++blocks;
  }
  bool samples_ok = true;
  for (int i = 0; i < 16000; ++i) samples_ok = samples_ok && audio[i] == static_cast<int16_t>(i);
  check(g_hal.mic_done() && blocks == 8 && samples_ok && !fake::pdm_overflowed, "pdm",
        "16,000 samples from eight 2,048-sample blocks, in order");
  fake::pdm_deliver_block(5);
  check(audio[0] == 0 && !fake::pdm_overflowed, "pdm",
        "after the recording, blocks no longer touch the core's buffer");

  // A dead microphone: the core gives up and calls mic_stop(); the HAL restarts the PDM.
  check(g_hal.mic_start(audio, 16000), "dead", "recording started");
  fake::pdm_running = false;  // the library stopped the PDM (e.g. after an overflow)
  const int ends = fake::count_events("pdm.end");
  const int begins = fake::count_events("pdm.begin");
  g_hal.mic_stop();
  const char* n = g_hal.take_notice();
  check(fake::count_events("pdm.end") == ends + 1 && fake::count_events("pdm.begin") == begins + 1 &&
            fake::pdm_running && n != nullptr && strstr(n, "PDM restarted") != nullptr,
        "dead", "mic_stop(): PDM.end() + begin() (revived), a notice for the host's log");
  fake::pdm_deliver_block(0);
  check(audio[0] == 0, "dead", "the abandoned buffer is not written any more");
}

void test_usb() {
  printf("USB serial\n");
  boot();
  uint8_t w[kMaxFrameWire];
  const size_t n = big_frame(1, w);
  g_hal.link_write(w, n);
  for (int i = 0; i < 10; ++i) g_hal.poll();
  check(fake::usb_received.size() == n && memcmp(fake::usb_received.data(), w, n) == 0, "usb",
        "a 242-byte frame leaves in 64-byte packets over a few loops");
  check(fake::usb_operator_bool_calls == 0 && fake::usb_write_calls == 0, "usb",
        "never Serial's operator bool (delay(1)) nor the blocking write()");

  // The host keeps the port open but stops reading: nothing waits, whole frames are dropped.
  fake::usb_received.clear();
  fake::usb_host_reads = false;
  fake::usb_send_nb_calls = 0;
  int written = 0;
  for (uint16_t s = 0; s < 40; ++s) {
    const size_t m = big_frame(s, w);
    g_hal.link_write(w, m);
    g_hal.poll();
    ++written;
  }
  check(fake::usb_send_nb_calls <= 2 * written && g_hal.link_room() < kMaxFrameWire, "usb",
        "40 frames to a host that does not read: no retry loop, the queue is full");
  const char* dropped = g_hal.take_notice();
  (void)dropped;
  fake::usb_host_reads = true;
  for (int i = 0; i < 200; ++i) {
    fake::usb_host_read_packet();
    g_hal.poll();
  }
  Stream st;
  st.feed(fake::usb_received.data(), fake::usb_received.size());
  check(st.errors == 0 && st.frames >= 8 && st.frames < written, "usb",
        "when it reads again: only whole frames (those that fit), no broken one");
  const char* note = g_hal.take_notice();
  check(note != nullptr && strstr(note, "frames dropped") != nullptr, "usb",
        "a notice counts the dropped frames (for the host's log)");

  // Port closed (DTR low): nothing is queued, no room.
  fake::usb_dtr = false;
  g_hal.poll();
  fake::usb_received.clear();
  g_hal.link_write(w, n);
  g_hal.poll();
  check(g_hal.link_room() == 0 && fake::usb_received.empty(), "usb",
        "no terminal: link_room() 0, frames dropped whole");
  fake::usb_dtr = true;
  g_hal.poll();
  check(g_hal.link_switched(), "usb", "a terminal opens the port: link_switched() (HELLO)");
  const char* again = g_hal.take_notice();
  check(again != nullptr && strncmp(again, "board: buttons", 14) == 0, "usb",
        "and the boot report again (the new host missed it)");

  // Reads: one available() per block.
  for (int i = 0; i < 100; ++i) fake::usb_to_board.push_back(static_cast<uint8_t>(i));
  fake::usb_available_calls = fake::usb_readbytes_calls = 0;
  uint8_t buf[64];
  const size_t got = g_hal.link_read(buf, sizeof buf);
  const size_t got2 = g_hal.link_read(buf, sizeof buf);
  check(got == 64 && got2 == 36 && fake::usb_available_calls == 2 &&
            fake::usb_readbytes_calls == 2,
        "usb", "100 bytes: two reads of 64 + 36, one available() and one readBytes() each");
}

void connect_ble(uint16_t mtu) {
  fake::ble_connected = true;
  fake::ble_subscribed = true;
  fake::ble_mtu = mtu;
  fake::ble_handle = 0;
  g_hal.poll();
}

void test_ble() {
  printf("BLE\n");
  boot();
  fake::usb_to_board.assign(5, 0x11);  // stale USB bytes must not follow us into BLE
  connect_ble(247);
  check(g_hal.link_switched() && !g_hal.link_switched(), "ble",
        "a central connects: link_switched() once");
  const char* report = g_hal.take_notice();
  const char* n = g_hal.take_notice();
  check(report != nullptr && strncmp(report, "board:", 6) == 0 && n != nullptr &&
            strstr(n, "MTU 247") != nullptr,
        "ble", "notices: the boot report, then central connected, MTU 247");
  uint8_t w[kMaxFrameWire];
  std::vector<uint8_t> sent;
  for (uint16_t s = 0; s < 8; ++s) {
    const size_t m = big_frame(s, w);
    sent.insert(sent.end(), w, w + m);
    g_hal.link_write(w, m);
  }
  const size_t after_writes = fake::notifications.size();
  check(after_writes <= 4, "ble", "at most 4 notifications per loop (link_write shares the budget)");
  int loops = 0;
  while (g_hal.link_room() < 2048 && loops < 100) {
    const size_t before = fake::notifications.size();
    g_hal.poll();
    if (fake::notifications.size() - before > 4) break;
    ++loops;
  }
  std::vector<uint8_t> got;
  size_t largest = 0;
  for (const auto& v : fake::notifications) {
    got.insert(got.end(), v.begin(), v.end());
    if (v.size() > largest) largest = v.size();
  }
  check(got == sent && largest == 244, "ble",
        "MTU 247: 8 frames in notifications of up to 244 bytes, byte-exact");
  check(loops >= 1 && fake::notifications.size() <= 4u * static_cast<size_t>(loops + 1), "ble",
        "spread over loops, 4 notifications per loop at most");

  // MTU 23 (a central that never asks for more).
  boot();
  connect_ble(23);
  g_hal.link_switched();
  fake::notifications.clear();
  const size_t m = big_frame(3, w);
  g_hal.link_write(w, m);
  for (int i = 0; i < 20; ++i) g_hal.poll();
  largest = 0;
  got.clear();
  for (const auto& v : fake::notifications) {
    got.insert(got.end(), v.begin(), v.end());
    if (v.size() > largest) largest = v.size();
  }
  check(largest == 20 && got.size() == m && memcmp(got.data(), w, m) == 0, "ble",
        "MTU 23: 20-byte notifications (nothing truncated by ATT)");

  // The central vanishes mid-burst: the burst stops; back on USB, a clean start.
  fake::notifications.clear();
  fake::ble_drop_after_notifications = 2;
  for (uint16_t s = 0; s < 4; ++s) g_hal.link_write(w, big_frame(s, w));
  const size_t at_drop = fake::notifications.size();
  const int calls = fake::ble_connected_calls;
  g_hal.poll();
  check(at_drop == 2 && fake::notifications.size() == 2 && fake::ble_connected_calls > calls, "ble",
        "central gone after 2 notifications: no more writeValue (BLE.connected() checked)");
  fake::usb_received.clear();
  g_hal.poll();
  check(g_hal.link_switched() && fake::usb_received.empty() && g_hal.link_room() == 2048, "ble",
        "back on USB: link_switched(), the BLE leftovers are not sent to the USB host");

  // BLE input, and its flush on a switch.
  connect_ble(247);
  g_hal.link_switched();
  uint8_t hello_req[16];
  const size_t hr = frame(MsgType::kHelloReq, 5, nullptr, 0, hello_req);
  fake::ble_central_writes(hello_req, hr);
  g_hal.poll();
  uint8_t rx[64];
  const size_t r = g_hal.link_read(rx, sizeof rx);
  check(r == hr && memcmp(rx, hello_req, hr) == 0, "ble", "a central's write reaches link_read()");
  fake::ble_central_writes(hello_req, hr / 2);
  g_hal.poll();
  fake::ble_connected = false;
  g_hal.poll();
  fake::ble_connected = true;
  g_hal.poll();
  check(g_hal.link_switched() && g_hal.link_read(rx, sizeof rx) == 0, "ble",
        "reconnect: the half frame of the old connection is flushed");
}

void test_buttons() {
  printf("buttons: both wirings\n");
  boot();
  fake::pressed[1] = true;
  check(g_hal.buttons() == kButtonD3, "wiring", "pull-up wiring: D3 to GND reads pressed");
  fake::pressed[1] = false;
  fake::board = fake::Board::kPullDownTo3v3;
  check(g_hal.buttons() == 0x0F, "wiring",
        "the paper's pull-down board with the default build: every button looks held");
  g_hal.set_wiring(ButtonWiring::kPullDownTo3v3);
  fake::pressed[3] = true;
  check(g_hal.buttons() == kButtonD5 && fake::pin_mode[D2] == INPUT_PULLDOWN, "wiring",
        "set_wiring(pull-down): D5 to 3.3 V reads pressed, pins get the internal pull-downs");
  fake::pressed[3] = false;
  check(g_hal.buttons() == 0, "wiring", "and released reads released");
  // Boot-time detection from the two readings per pin.
  const bool up_pu[4] = {true, true, true, true}, down_pu[4] = {false, false, false, false};
  const bool up_pd[4] = {false, false, false, false}, down_pd[4] = {false, false, false, false};
  const bool up_held[4] = {false, true, true, true};  // D2 held at boot, pull-up board
  check(decide_wiring(up_pu, down_pu) == ButtonWiring::kPullUpToGnd &&
            decide_wiring(up_pd, down_pd) == ButtonWiring::kPullDownTo3v3 &&
            decide_wiring(up_held, down_pu) == ButtonWiring::kPullUpToGnd,
        "detect", "pins follow the internal pull: pull-up board; LOW against it: pull-down; "
                  "one button held at boot does not fool it");
  g_hal.set_wiring(ButtonWiring::kPullUpToGnd);
}

// The whole board: Device over ArduinoHal; the host sends RESET.
void run_reset(bool over_ble) {
  boot();
  static Device dev;
  DeviceConfig cfg;
  check(ok(dev.begin(&g_hal, cfg)), "reset", "Device boots on the Arduino HAL");
  if (over_ble) connect_ble(247);
  for (int i = 0; i < 5; ++i) {
    g_hal.poll();
    dev.poll();
  }
  fake::usb_received.clear();
  fake::notifications.clear();
  uint8_t w[16];
  const size_t n = frame(MsgType::kReset, 77, nullptr, 0, w);
  if (over_ble) {
    fake::ble_central_writes(w, n);
  } else {
    fake::usb_to_board.assign(w, w + n);
  }
  fake::events.clear();
  for (int i = 0; i < 100 && fake::first_event("reset") < 0; ++i) {
    g_hal.poll();
    dev.poll();
    fake::now_ms += 10;
  }
  Stream st;
  if (over_ble) {
    for (const auto& v : fake::notifications) st.feed(v.data(), v.size());
  } else {
    st.feed(fake::usb_received.data(), fake::usb_received.size());
  }
  const int reset_at = fake::first_event("reset");
  check(reset_at >= 0 && st.saw(MsgType::kAck) && st.errors == 0, "reset",
        over_ble ? "BLE: the ACK of RESET reached the central, then NVIC_SystemReset"
                 : "USB: the ACK of RESET reached the host, then NVIC_SystemReset");
  if (over_ble) {
    const int disc = fake::first_event("ble.disconnect");
    check(disc >= 0 && disc < reset_at, "reset", "BLE: disconnected before the reset");
  }
}

void test_sketch() {
  printf("the sketch: setup() and loop()\n");
  fake::reset();  // a silent microphone, a USB host with the port open
  setup();
  for (int i = 0; i < 20; ++i) {
    loop();
    fake::now_ms += 1;
  }
  FrameParser p;
  bool hello = false, report = false;
  int hello_at = -1, report_at = -1, idx = 0;
  for (uint8_t b : fake::usb_received) {
    if (p.push(b) != FrameParser::Event::kFrame) continue;
    const Frame& f = p.frame();
    if (f.type == static_cast<uint8_t>(MsgType::kHello)) {
      hello = true;
      hello_at = idx;
    }
    if (f.type == static_cast<uint8_t>(MsgType::kLog) && f.length > 7 &&
        memcmp(f.payload + 1, "board: ", 7) == 0) {
      report = f.payload[0] == static_cast<uint8_t>(LogLevel::kError);
      report_at = idx;
    }
    ++idx;
  }
  check(hello && report && hello_at < report_at, "sketch",
        "boot: HELLO, then LOG error \"board: ... microphone started but SILENT ...\"");
}

}  // namespace

int main(int, char**) {
  test_boot();
  test_microphone();
  test_usb();
  test_ble();
  test_buttons();
  run_reset(false);
  run_reset(true);
  test_sketch();
  printf("test_arduino_hal: %d checks, %d failed: %s\n", g_checks, g_failures,
         g_failures ? "FAIL" : "ok");
  return g_failures ? 1 : 0;
}
