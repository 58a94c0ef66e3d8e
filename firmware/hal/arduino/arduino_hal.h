// The board HAL: Arduino Nano 33 BLE Sense (nRF52840) on the Arduino mbed core.
//
//   microphone  the on-board PDM microphone (MP34DT05) via PDM.h, 16 kHz mono int16, gain 80
//               (+20 dB) and 4,096-byte blocks as the paper's code
//   buttons     D2..D5; two wirings (README "Wiring"): to GND with the internal pull-ups
//               (pressed = LOW, the default) or the paper's breadboard, to 3.3 V with external
//               pull-downs (pressed = HIGH); build option TINYFED_BUTTON_WIRING, or at run time
//   LEDs        RGB LEDR/LEDG/LEDB (active low); LED_BUILTIN (active high) = busy / transfer
//   link        USB CDC `Serial`, or a BLE GATT service (ArduinoBLE) carrying the same bytes;
//               output goes through one TX queue, sent without ever waiting
//   identity    FICR DEVICEID (board id), the RNG peripheral (boot id, read before BLE starts)
//
// Compiled for the board by PlatformIO / the Arduino IDE only; on the host `make test` builds
// it against tools/arduino_stubs/ with the fakes of tests/arduino_fakes.cpp.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "../../core/hal.h"

// Button wiring, chosen at build time (platformio.ini build_src_flags, or a #define before
// this header in the Arduino IDE):
//   0  buttons between the pin and GND, internal pull-ups, pressed = LOW (the default)
//   1  the paper's breadboard: buttons between 3.3 V and the pin, external pull-down
//      resistors to GND, pressed = HIGH
//   2  detect at boot (ArduinoHal::detect_wiring; a heuristic: README "Wiring")
#ifndef TINYFED_BUTTON_WIRING
#define TINYFED_BUTTON_WIRING 0
#endif

namespace tinyfed {

enum class ButtonWiring : uint8_t { kPullUpToGnd = 0, kPullDownTo3v3 = 1 };

// Boot-time wiring detection from two readings per button pin, with the internal pull-up and
// with the internal pull-down enabled (true = the pin read HIGH). A pin that follows the
// internal pull has no external resistor (pull-up wiring: button to GND); a pin that reads LOW
// even against the internal pull-up has an external pull-down (the paper's breadboard).
// At least three of the four pins must agree on the pull-down; else the default.
ButtonWiring decide_wiring(const bool high_with_pullup[4], const bool high_with_pulldown[4]);

class ArduinoHal final : public Hal {
 public:
  // Takes the boot id from the RNG, then pins, PDM, USB serial and BLE. Call once from
  // setup(), before Device::begin(). False if the microphone or BLE did not start (the board
  // still runs: see boot_report()).
  bool begin();
  // Services BLE and sends queued output within this loop's budget; call at the top of loop().
  void poll();
  // One line describing the boot (wiring, microphone, BLE name, link), for Device::report.
  const char* boot_report() const { return boot_report_; }
  // A pending notice for the host's log (the boot report again for a new host, BLE connected
  // with its MTU, frames dropped, the microphone restarted...), or nullptr. The sketch
  // forwards it with Device::report, one per loop.
  const char* take_notice();
  // The button wiring in use, and switching it at run time.
  ButtonWiring wiring() const { return wiring_; }
  void set_wiring(ButtonWiring w);

  uint32_t millis() override;
  size_t link_read(uint8_t* buf, size_t cap) override;
  void link_write(const uint8_t* data, size_t n) override;
  size_t link_room() override;
  bool link_switched() override;
  uint8_t buttons() override;
  void set_leds(uint8_t leds) override;
  bool mic_start(int16_t* buf, size_t n) override;
  bool mic_done() override;
  void mic_stop() override;
  uint32_t random32() override;
  void board_id(uint8_t out[8]) override;
  uint8_t hello_flags() override { return 0; }  // a real board
  void log(LogLevel level, const char* text) override;
  void reboot() override;

 private:
  void pump();
  void check_transport();
  void notice(const char* text);

  ButtonWiring wiring_ = ButtonWiring::kPullUpToGnd;
  bool wiring_detected_ = false;
  uint32_t boot_random_ = 0;
  uint32_t random_calls_ = 0;
  char boot_report_[160] = {0};
  char notice_[120] = {0};
  bool notice_pending_ = false;
  bool boot_report_pending_ = false;  // a new host gets the boot report again
};

}  // namespace tinyfed
