// The board's setup() and loop(): the portable core over the Arduino HAL. The sketch
// (arduino/tinyfed/tinyfed.ino) is only a placeholder for the Arduino IDE; PlatformIO builds
// this file directly (platformio.ini).
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
  // The HAL reads the boot id before BLE starts, and reports what did not start; the board
  // runs anyway (a dead microphone only disables recording: Device logs each attempt).
  const bool hal_ok = g_hal.begin();
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
  g_device.report(hal_ok ? tinyfed::LogLevel::kInfo : tinyfed::LogLevel::kError,
                  g_hal.boot_report());
}

void loop() {
  g_hal.poll();     // BLE events, transport switches, queued output (never waits)
  g_device.poll();  // link, buttons, recording, training
  const char* notice = g_hal.take_notice();
  if (notice != nullptr) g_device.report(tinyfed::LogLevel::kInfo, notice);
}
