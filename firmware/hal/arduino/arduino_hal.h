// The board HAL: Arduino Nano 33 BLE Sense (nRF52840) on the Arduino mbed core.
//
//   microphone  the on-board PDM microphone (MP34DT05) via PDM.h, 16 kHz mono int16
//   buttons     D2..D5 to GND, internal pull-ups (pressed = LOW); debounced by the core
//   LEDs        RGB LEDR/LEDG/LEDB (active low); LED_BUILTIN (active high) = busy
//   link        USB CDC `Serial`, or a BLE GATT service (ArduinoBLE) carrying the same bytes
//   identity    FICR DEVICEID (board id), the RNG peripheral (boot id)
//
// NOT compiled by CI (no Arduino core offline): see firmware/README.md.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "../../core/hal.h"

namespace tinyfed {

class ArduinoHal final : public Hal {
 public:
  // Pins, PDM, USB serial and BLE. Call once from setup(), before Device::begin().
  bool begin();
  // Services the BLE stack; call at the top of every loop().
  void poll();

  uint32_t millis() override;
  size_t link_read(uint8_t* buf, size_t cap) override;
  void link_write(const uint8_t* data, size_t n) override;
  uint8_t buttons() override;
  void set_leds(uint8_t leds) override;
  bool mic_start(int16_t* buf, size_t n) override;
  bool mic_done() override;
  uint32_t random32() override;
  void board_id(uint8_t out[8]) override;
  uint8_t hello_flags() override { return 0; }  // a real board
  void log(LogLevel level, const char* text) override;
  void reboot() override;
};

}  // namespace tinyfed
