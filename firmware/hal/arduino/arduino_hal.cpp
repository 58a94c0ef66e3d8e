// See arduino_hal.h. Written against the Arduino mbed core for the Nano 33 BLE (Sense)
// (ArduinoCore-mbed: PDM.h, USB CDC Serial) and ArduinoBLE. NOT compiled by CI.
#include "arduino_hal.h"

#include <Arduino.h>
#include <ArduinoBLE.h>
#include <PDM.h>

#include "../../core/link_spec.h"

namespace tinyfed {

namespace {

// ---- constants, with where they come from ------------------------------------------------

// DESIGN.md section 2: buttons on D2..D5 (train keyword 1..3, infer).
constexpr uint8_t kButtonPins[kButtons] = {D2, D3, D4, D5};
// PDM: one channel at 16 kHz (DESIGN.md section 2; PDM.begin(channels, rate)).
constexpr int kPdmChannels = 1;
constexpr long kPdmRate = 16000;
// PDM callback scratch: the mbed PDM library delivers 256-sample (512-byte) blocks by default.
constexpr size_t kPdmBlock = 256;
// BLE receive ring: one window of full frames (spec.py DEFAULT_WINDOW x MAX_FRAME_WIRE = 1,936
// bytes) fits, rounded up to a power of two.
constexpr size_t kBleRxRing = 2048;
// Largest notification: the ATT default MTU 23 minus the 3-byte ATT header. Safe with every
// central; the throughput cost only matters for model uploads over BLE (README).
constexpr size_t kBleNotifyBytes = 20;
// Largest ATT write we accept on the RX characteristic: MTU 247 - 3 (spec.py MAX_FRAME_WIRE).
constexpr int kBleValueBytes = 244;
// Set to true to mirror log lines on the hardware UART (TX pin, Serial1, 115200 baud): USB
// Serial carries the link and must not see text.
constexpr bool kDebugUart = false;

// ---- microphone (PDM interrupt) ----------------------------------------------------------

int16_t g_pdm_block[kPdmBlock];
int16_t* volatile g_rec_buf = nullptr;  // the core's audio buffer while recording
volatile size_t g_rec_len = 0;
volatile size_t g_rec_pos = 0;

void on_pdm_data() {
  // Called from the PDM interrupt: copy what arrived; keep it short.
  int bytes = PDM.available();
  if (bytes > static_cast<int>(sizeof g_pdm_block)) bytes = sizeof g_pdm_block;
  PDM.read(g_pdm_block, bytes);
  int16_t* dst = g_rec_buf;
  if (dst == nullptr) return;
  const size_t samples = static_cast<size_t>(bytes) / 2;
  size_t pos = g_rec_pos;
  for (size_t i = 0; i < samples && pos < g_rec_len; ++i) dst[pos++] = g_pdm_block[i];
  g_rec_pos = pos;
  if (pos >= g_rec_len) g_rec_buf = nullptr;  // done: stop writing into the core's buffer
}

// ---- BLE ---------------------------------------------------------------------------------

BLEService g_service(link::kBleServiceUuid);
BLECharacteristic g_rx_char(link::kBleRxCharUuid, BLEWriteWithoutResponse | BLEWrite,
                            kBleValueBytes);
BLECharacteristic g_tx_char(link::kBleTxCharUuid, BLENotify, kBleValueBytes);
uint8_t g_ble_rx[kBleRxRing];
size_t g_ble_head = 0;  // written by the BLE event handler (in BLE.poll(), not an interrupt)
size_t g_ble_tail = 0;
bool g_ble_ok = false;
char g_ble_name[16];

void on_rx_written(BLEDevice, BLECharacteristic c) {
  const uint8_t* v = c.value();
  const int n = c.valueLength();
  for (int i = 0; i < n; ++i) {
    const size_t next = (g_ble_head + 1) % kBleRxRing;
    if (next == g_ble_tail) break;  // full: the parser will see a broken frame and say so
    g_ble_rx[g_ble_head] = v[i];
    g_ble_head = next;
  }
}

bool ble_active() { return g_ble_ok && BLE.connected(); }

}  // namespace

bool ArduinoHal::begin() {
  for (uint8_t pin : kButtonPins) pinMode(pin, INPUT_PULLUP);
  pinMode(LEDR, OUTPUT);
  pinMode(LEDG, OUTPUT);
  pinMode(LEDB, OUTPUT);
  pinMode(LED_BUILTIN, OUTPUT);
  set_leds(0);
  Serial.begin(link::kBaudRate);  // USB CDC: the rate is nominal
  if (kDebugUart) Serial1.begin(115200);
  PDM.onReceive(on_pdm_data);
  const bool pdm_ok = PDM.begin(kPdmChannels, kPdmRate) != 0;
  // BLE: one service, RX (host writes) and TX (board notifies), same byte stream as USB.
  uint8_t id[8];
  board_id(id);
  static const char kHex[] = "0123456789abcdef";
  size_t k = 0;
  for (const char* p = link::kBleNamePrefix; *p != '\0' && k < 10; ++p) g_ble_name[k++] = *p;
  // spec.py: the local name is the prefix + the last 4 hex digits of the board id.
  g_ble_name[k++] = kHex[id[6] >> 4];
  g_ble_name[k++] = kHex[id[6] & 15];
  g_ble_name[k++] = kHex[id[7] >> 4];
  g_ble_name[k++] = kHex[id[7] & 15];
  g_ble_name[k] = '\0';
  g_ble_ok = BLE.begin() != 0;
  if (g_ble_ok) {
    BLE.setLocalName(g_ble_name);
    BLE.setDeviceName(g_ble_name);
    BLE.setAdvertisedService(g_service);
    g_service.addCharacteristic(g_rx_char);
    g_service.addCharacteristic(g_tx_char);
    BLE.addService(g_service);
    g_rx_char.setEventHandler(BLEWritten, on_rx_written);
    BLE.advertise();
  }
  return pdm_ok;
}

void ArduinoHal::poll() {
  if (g_ble_ok) BLE.poll();  // non-blocking without a timeout argument
}

uint32_t ArduinoHal::millis() { return ::millis(); }

size_t ArduinoHal::link_read(uint8_t* buf, size_t cap) {
  // One host at a time: BLE while a central is connected, USB serial otherwise (two byte
  // streams into one frame parser would corrupt each other's frames).
  size_t n = 0;
  if (ble_active()) {
    while (n < cap && g_ble_tail != g_ble_head) {
      buf[n++] = g_ble_rx[g_ble_tail];
      g_ble_tail = (g_ble_tail + 1) % kBleRxRing;
    }
    return n;
  }
  while (n < cap && Serial.available() > 0) {
    const int c = Serial.read();
    if (c < 0) break;
    buf[n++] = static_cast<uint8_t>(c);
  }
  return n;
}

void ArduinoHal::link_write(const uint8_t* data, size_t n) {
  if (ble_active()) {
    if (!g_tx_char.subscribed()) return;
    for (size_t off = 0; off < n; off += kBleNotifyBytes) {
      const size_t m = (n - off) < kBleNotifyBytes ? (n - off) : kBleNotifyBytes;
      g_tx_char.writeValue(data + off, static_cast<int>(m));
    }
    return;
  }
  if (!Serial) return;  // no host has the port open (DTR low): drop the frame whole
  Serial.write(data, n);
}

uint8_t ArduinoHal::buttons() {
  uint8_t bits = 0;
  for (int i = 0; i < kButtons; ++i) {
    if (digitalRead(kButtonPins[i]) == LOW) bits |= static_cast<uint8_t>(1u << i);
  }
  return bits;
}

void ArduinoHal::set_leds(uint8_t leds) {
  // The RGB LED is active low; the built-in LED is active high.
  digitalWrite(LEDR, (leds & kLedRed) ? LOW : HIGH);
  digitalWrite(LEDG, (leds & kLedGreen) ? LOW : HIGH);
  digitalWrite(LEDB, (leds & kLedBlue) ? LOW : HIGH);
  digitalWrite(LED_BUILTIN, (leds & kLedBusy) ? HIGH : LOW);
}

bool ArduinoHal::mic_start(int16_t* buf, size_t n) {
  noInterrupts();
  g_rec_len = n;
  g_rec_pos = 0;
  g_rec_buf = buf;
  interrupts();
  return true;
}

bool ArduinoHal::mic_done() { return g_rec_buf == nullptr; }

uint32_t ArduinoHal::random32() {
  // The nRF52840 RNG peripheral (product specification 6.22) with bias correction, one byte
  // per VALRDY event; called once per boot, before the BLE stack starts using the RNG.
  NRF_RNG->CONFIG = RNG_CONFIG_DERCEN_Enabled << RNG_CONFIG_DERCEN_Pos;
  NRF_RNG->EVENTS_VALRDY = 0;
  NRF_RNG->TASKS_START = 1;
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) {
    while (NRF_RNG->EVENTS_VALRDY == 0) {
    }
    NRF_RNG->EVENTS_VALRDY = 0;
    v = (v << 8) | (NRF_RNG->VALUE & 0xFFu);
  }
  NRF_RNG->TASKS_STOP = 1;
  return v;
}

void ArduinoHal::board_id(uint8_t out[8]) {
  // The factory-programmed 64-bit device id (FICR DEVICEID[0..1]), little-endian.
  const uint32_t lo = NRF_FICR->DEVICEID[0];
  const uint32_t hi = NRF_FICR->DEVICEID[1];
  for (int i = 0; i < 4; ++i) {
    out[i] = static_cast<uint8_t>(lo >> (8 * i));
    out[4 + i] = static_cast<uint8_t>(hi >> (8 * i));
  }
}

void ArduinoHal::log(LogLevel level, const char* text) {
  if (!kDebugUart) return;  // warnings reach the gateway as LOG frames (the core sends them)
  static const char* const kLevel[] = {"debug", "info", "warn", "error"};
  Serial1.print(::millis());
  Serial1.print(' ');
  Serial1.print(kLevel[static_cast<uint8_t>(level) & 3]);
  Serial1.print(' ');
  Serial1.println(text);
}

void ArduinoHal::reboot() {
  if (Serial) Serial.flush();  // the ACK of RESET goes out first
  NVIC_SystemReset();
}

}  // namespace tinyfed
