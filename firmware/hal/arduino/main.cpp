// The board's setup() and loop(): the portable core over the Arduino HAL. The sketch
// (arduino/tinyfed/tinyfed.ino) is only a placeholder for the Arduino IDE; PlatformIO builds
// this file directly (platformio.ini). NOT compiled by CI.
#include <Arduino.h>

#include "../../core/device.h"
#include "arduino_hal.h"

namespace {

tinyfed::ArduinoHal g_hal;
// All of the core's memory (~121 KB: model, momentum, audio, features, MFCC, link buffers),
// static so that the linker accounts for it and nothing is allocated after setup().
tinyfed::Device g_device;

}  // namespace

void setup() {
  g_hal.begin();
  tinyfed::DeviceConfig config;  // the paper's defaults; the gateway may SET_PARAMS later
  if (!tinyfed::ok(g_device.begin(&g_hal, config))) {
    // Cannot happen with the default config; blink red forever so it is visible.
    for (;;) {
      g_hal.set_leds(tinyfed::kLedRed);
      delay(200);
      g_hal.set_leds(0);
      delay(200);
    }
  }
}

void loop() {
  g_hal.poll();    // BLE events
  g_device.poll();  // link, buttons, recording, training: never blocks
}
