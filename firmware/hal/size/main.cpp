// The "size HAL": a bare-metal stub that links the whole portable core for the Cortex-M4F so
// that `make size` can report its static RAM and flash. It is never run; every HAL call
// touches a volatile so the compiler keeps all the core's code paths. The real board HAL
// (hal/arduino/) adds the mbed OS, USB CDC and the BLE stack on top of these numbers.
#include <stddef.h>
#include <stdint.h>

#include "device.h"

namespace {

volatile uint32_t g_ticks;      // stands in for a timer register
volatile uint8_t g_rx;          // stands in for a UART data register
volatile uint8_t g_tx;
volatile uint8_t g_buttons;
volatile uint8_t g_leds;
volatile uint32_t g_mic_done;

class SizeHal final : public tinyfed::Hal {
 public:
  uint32_t millis() override { return g_ticks; }
  size_t link_read(uint8_t* buf, size_t cap) override {
    if (cap == 0 || g_rx == 0) return 0;
    buf[0] = g_rx;
    return 1;
  }
  void link_write(const uint8_t* data, size_t n) override {
    for (size_t i = 0; i < n; ++i) g_tx = data[i];
  }
  uint8_t buttons() override { return g_buttons; }
  void set_leds(uint8_t leds) override { g_leds = leds; }
  bool mic_start(int16_t* buf, size_t n) override {
    buf[n - 1] = 0;
    return true;
  }
  bool mic_done() override { return g_mic_done != 0; }
  uint32_t random32() override { return g_ticks * 2654435761u; }
  void board_id(uint8_t out[8]) override {
    for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(i);
  }
  uint8_t hello_flags() override { return 0; }
  void log(tinyfed::LogLevel, const char* text) override { g_tx = static_cast<uint8_t>(*text); }
  void reboot() override {}
};

SizeHal g_hal;
tinyfed::Device g_device;  // the core's whole static memory

}  // namespace

int main() {
  tinyfed::DeviceConfig config;
  if (!tinyfed::ok(g_device.begin(&g_hal, config))) return 1;
  for (;;) g_device.poll();
}
