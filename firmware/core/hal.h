// The hardware abstraction layer: everything the portable core needs from a platform, and
// nothing more. One implementation per port:
//   hal/arduino/  the Arduino Nano 33 BLE Sense (PDM, buttons, RGB LED, USB serial, BLE)
//   hal/host/     the virtual board (pseudo-terminal or stdio, WAV clips, scripted user)
//   tests/        an in-memory fake (tests/test_device.cpp), and the bare-metal size build
//
// Every call must return promptly: the core's poll() is called from the main loop and never
// waits, so no HAL call may block longer than a debounce interval (kDebounceMs in device.h).
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace tinyfed {

// Buttons, as bits of Hal::buttons(): the paper's four push-buttons on D2..D5, three to train
// one keyword each and one to classify (firmware/README.md "Wiring").
constexpr uint8_t kButtonD2 = 1u << 0;  // train keyword 1 (LED red)
constexpr uint8_t kButtonD3 = 1u << 1;  // train keyword 2 (LED green)
constexpr uint8_t kButtonD4 = 1u << 2;  // train keyword 3 (LED blue)
constexpr uint8_t kButtonD5 = 1u << 3;  // infer only
constexpr int kButtons = 4;

// LEDs, as bits of Hal::set_leds() (the same bits as the STATE frame's `led` field).
constexpr uint8_t kLedRed = 1u << 0;
constexpr uint8_t kLedGreen = 1u << 1;
constexpr uint8_t kLedBlue = 1u << 2;
constexpr uint8_t kLedBusy = 1u << 3;  // the built-in (orange) LED

// Hal::link_room() of a link without output back-pressure.
constexpr size_t kLinkRoomUnlimited = static_cast<size_t>(-1);

enum class LogLevel : uint8_t { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

class Hal {
 public:
  // Milliseconds since boot (wraps after 49 days; the core compares with unsigned subtraction).
  virtual uint32_t millis() = 0;

  // Link, a byte stream in both directions (USB serial, BLE, pty or stdio). read() copies up
  // to cap received bytes into buf and returns how many (0 if none, never waits). write()
  // sends a whole frame; a port that cannot take it now may drop it whole, but never send a
  // part of it (the peer's parser resynchronises at the next delimiter anyway).
  virtual size_t link_read(uint8_t* buf, size_t cap) = 0;
  virtual void link_write(const uint8_t* data, size_t n) = 0;

  // Bytes the link's output queue takes now without dropping: link_write() of a frame no
  // longer than this is sent. The core sends bulk output (READ's MODEL_CHUNK frames) only
  // while a whole frame fits, so a slow link (BLE at the default MTU, a host that stopped
  // reading) slows an upload down instead of losing chunks. Default: no limit known.
  virtual size_t link_room() { return kLinkRoomUnlimited; }

  // True once after the HAL switched to another transport (USB serial <-> BLE): bytes of the
  // old host's half-received frame must not be glued to the new host's first frame. The core
  // then resets its frame parser, stops a READ, abandons an open transfer and sends HELLO.
  virtual bool link_switched() { return false; }

  // Raw button levels: bit set = pressed now (kButtonD2..kButtonD5). No debouncing here; the
  // core debounces (device.h, kDebounceMs).
  virtual uint8_t buttons() = 0;

  // LEDs to show: kLedRed | kLedGreen | kLedBlue | kLedBusy bits, 1 = on.
  virtual void set_leds(uint8_t leds) = 0;

  // Microphone: start recording n samples of 16 kHz int16 mono into buf (the core's audio
  // buffer, which the HAL may fill from an interrupt). mic_done() is true once all n samples
  // are in. mic_start returns false if the microphone cannot start (the core reports it).
  virtual bool mic_start(int16_t* buf, size_t n) = 0;
  virtual bool mic_done() = 0;
  // The core gave up on a recording (no data within kRecordTimeoutMs, device.h): stop writing
  // into buf (it is reused as the staging area of host samples) and, if the HAL can, restart
  // the microphone so that the next recording has a chance.
  virtual void mic_stop() {}

  // A random 32-bit number (the boot id): the nRF52840's RNG on the board.
  virtual uint32_t random32() = 0;

  // The board's unique id: the nRF52840 FICR DEVICEID on the board, a chosen value on a host.
  virtual void board_id(uint8_t out[8]) = 0;

  // HELLO's flags byte: bit 0 set on a virtual board.
  virtual uint8_t hello_flags() = 0;

  // A human-readable log line (NUL-terminated, no newline): serial console, file, stderr...
  virtual void log(LogLevel level, const char* text) = 0;

  // Restart the board. The core calls it kResetDelayMs (device.h) after it wrote RESET's ACK,
  // so that the ACK has left; the HAL may still drain its output and close the link cleanly
  // (BLE: disconnect) before resetting. On hardware this does not return (NVIC_SystemReset).
  // A host HAL may return; the core then re-initialises itself in place, like a power cycle.
  virtual void reboot() = 0;

 protected:
  ~Hal() = default;
};

}  // namespace tinyfed
