// The board's setup() and loop(): the portable core over the Arduino HAL. The sketch
// (arduino/tinyfed/tinyfed.ino) is only a placeholder for the Arduino IDE; PlatformIO builds
// this file directly (platformio.ini).
#include <Arduino.h>

#include "../../core/device.h"
#include "../../core/dscnn_weights.h"
#include "arduino_hal.h"

// The model family this board runs (docs/learning.md): 2 = the frozen int8 extractor in flash
// with a head trained here (new fleets), 1 = the paper's 650-16-3 network (its figures).
#ifndef TINYFED_MODEL_FAMILY
#define TINYFED_MODEL_FAMILY 2
#endif

namespace {

tinyfed::ArduinoHal g_hal;
// All of the core's memory (~121 KB: model, momentum, audio, features, MFCC, link buffers),
// static so that the linker accounts for it and nothing is allocated after setup().
tinyfed::Device g_device;
// The released extractor (core/dscnn_weights.*, generated from the pre-trained model).
const tinyfed::DscnnWeights g_extractor = tinyfed::dscnn_weights_from(
    tinyfed::dscnn_weights::kLayer, tinyfed::dscnn_weights::kEmbedA,
    tinyfed::dscnn_weights::kEmbedB);

}  // namespace

void setup() {
  // The HAL reads the boot id before BLE starts, and reports what did not start; the board
  // runs anyway (a dead microphone only disables recording: Device logs each attempt).
  const bool hal_ok = g_hal.begin();
  tinyfed::DeviceConfig config;  // the paper's defaults; the gateway may SET_PARAMS later
#if TINYFED_MODEL_FAMILY == 2
  config.arch = tinyfed::link::ArchId::kDscnnHead;
  config.pipeline = tinyfed::link::PipelineId::kLogmel40;
  config.extractor = &g_extractor;
  config.lr = 0.01f;  // the head's learning rate (docs/learning.md, section 3)
#endif
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
