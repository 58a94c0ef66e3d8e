// See arduino_fakes.h.
#include "arduino_fakes.h"

#include <string.h>

#include <Arduino.h>
#include <ArduinoBLE.h>
#include <PDM.h>
#include <USB/PluggableUSBSerial.h>
#include <utility/ATT.h>

namespace fake {

std::vector<std::string> events;
uint32_t now_ms = 0;
void (*on_delay)() = nullptr;
uint8_t rng_bytes[4] = {0xC0, 0xFF, 0xEE, 0x42};
uint32_t device_id[2] = {0x44332211u, 0x88776655u};
Board board = Board::kPullUpToGnd;
bool pressed[4] = {false, false, false, false};
int pin_mode[32];
int pin_level[32];
bool usb_dtr = true;
bool usb_host_reads = true;
bool usb_in_flight = false;
std::vector<uint8_t> usb_received;
std::vector<uint8_t> usb_to_board;
int usb_operator_bool_calls = 0, usb_write_calls = 0, usb_available_calls = 0,
    usb_read_calls = 0, usb_readbytes_calls = 0, usb_send_nb_calls = 0;
bool pdm_begin_ok = true;
int pdm_gain = 20;            // the library's default (PDM.cpp DEFAULT_PDM_GAIN)
int pdm_buffer_size = 512;    // PDMDoubleBuffer.h DEFAULT_PDM_BUFFER_SIZE
bool pdm_running = false;
bool pdm_overflowed = false;
bool ble_begin_ok = true;
bool ble_connected = false;
bool ble_subscribed = false;
uint16_t ble_mtu = 23;
uint16_t ble_handle = 0;
int ble_drop_after_notifications = -1;
std::vector<std::vector<uint8_t>> notifications;
int ble_connected_calls = 0;

namespace {
std::vector<uint8_t> g_pdm_block;   // the half the callback may read
size_t g_pdm_read = 0;
void (*g_pdm_cb)(void) = nullptr;
std::vector<uint8_t> g_central_pending;
BLECharacteristicEventHandler g_written_handler = nullptr;
int g_rng_index = 0;
struct FakeChar {
  std::string uuid;
  uint16_t props;
  int size;
  std::vector<uint8_t> value;
};
}  // namespace

int first_event(const char* prefix) {
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i].compare(0, strlen(prefix), prefix) == 0) return static_cast<int>(i);
  }
  return -1;
}

int count_events(const char* prefix) {
  int n = 0;
  for (const std::string& e : events) n += e.compare(0, strlen(prefix), prefix) == 0;
  return n;
}

void usb_host_read_packet() { usb_in_flight = false; }

void pdm_deliver_block(int16_t first) {
  if (!pdm_running) return;
  if (g_pdm_read < g_pdm_block.size()) {
    // PDM.cpp IrqHandler: the previous half was not read empty: "buffer overflow, stop".
    pdm_overflowed = true;
    pdm_running = false;
    return;
  }
  g_pdm_block.assign(static_cast<size_t>(pdm_buffer_size), 0);
  for (size_t i = 0; i + 1 < g_pdm_block.size(); i += 2) {
    const uint16_t v = static_cast<uint16_t>(first + static_cast<int16_t>(i / 2));
    g_pdm_block[i] = static_cast<uint8_t>(v);
    g_pdm_block[i + 1] = static_cast<uint8_t>(v >> 8);
  }
  g_pdm_read = 0;
  if (g_pdm_cb != nullptr) g_pdm_cb();
}

void ble_central_writes(const uint8_t* data, size_t n) {
  g_central_pending.insert(g_central_pending.end(), data, data + n);
}

void reset() {
  events.clear();
  now_ms = 1000;
  on_delay = nullptr;
  g_rng_index = 0;
  board = Board::kPullUpToGnd;
  for (bool& p : pressed) p = false;
  for (int i = 0; i < 32; ++i) pin_mode[i] = pin_level[i] = -1;
  usb_dtr = true;
  usb_host_reads = true;
  usb_in_flight = false;
  usb_received.clear();
  usb_to_board.clear();
  usb_operator_bool_calls = usb_write_calls = usb_available_calls = usb_read_calls = 0;
  usb_readbytes_calls = usb_send_nb_calls = 0;
  pdm_begin_ok = true;
  pdm_gain = 20;
  pdm_buffer_size = 512;
  pdm_running = false;
  pdm_overflowed = false;
  g_pdm_block.clear();
  g_pdm_read = 0;
  ble_begin_ok = true;
  ble_connected = false;
  ble_subscribed = false;
  ble_mtu = 23;
  ble_handle = 0;
  ble_drop_after_notifications = -1;
  notifications.clear();
  ble_connected_calls = 0;
  g_central_pending.clear();
}

// The BLEWritten handler runs inside BLE.poll()/HCI.poll() with the central's write.
void deliver_central_writes(BLECharacteristic& rx) {
  if (g_central_pending.empty() || g_written_handler == nullptr || !ble_connected) return;
  FakeChar* c = static_cast<FakeChar*>(rx.local_);
  size_t n = g_central_pending.size();
  if (n > static_cast<size_t>(ble_mtu - 3)) n = ble_mtu - 3u;  // one ATT write
  c->value.assign(g_central_pending.begin(), g_central_pending.begin() + static_cast<long>(n));
  g_central_pending.erase(g_central_pending.begin(), g_central_pending.begin() + static_cast<long>(n));
  g_written_handler(BLEDevice(), rx);
}
BLECharacteristic* g_rx_char = nullptr;

}  // namespace fake

using namespace fake;

// ---- Arduino core ----------------------------------------------------------------------

void pinMode(pin_size_t pin, PinMode mode) { fake::pin_mode[pin] = mode; }
void digitalWrite(pin_size_t pin, PinStatus status) { fake::pin_level[pin] = status; }
PinStatus digitalRead(pin_size_t pin) {
  if (pin < 2 || pin > 5) return LOW;
  const bool down = fake::pressed[pin - 2];
  const int mode = fake::pin_mode[pin];
  if (fake::board == Board::kPullUpToGnd) {
    if (down) return LOW;  // the button shorts the pin to GND
    return mode == INPUT_PULLUP ? HIGH : LOW;  // floating otherwise: reads the pull (or LOW)
  }
  // The paper's breadboard: 10 kOhm to GND on every pin, the button to 3.3 V. Against the
  // nRF52840's ~13 kOhm internal pull-up the pin sits at ~1.4 V: modelled as LOW.
  return down ? HIGH : LOW;
}
unsigned long millis(void) { return fake::now_ms; }
void delay(unsigned long ms) {
  fake::now_ms += static_cast<uint32_t>(ms);
  if (fake::on_delay != nullptr) fake::on_delay();
}
void delayMicroseconds(unsigned int) {}
void __enable_irq(void) {}
void __disable_irq(void) {}
void __NVIC_SystemReset(void) { fake::events.push_back("reset"); }

StubReg::operator uint32_t() const {
  switch (id) {
    case 2: return 1;  // EVENTS_VALRDY: a byte is always ready
    case 4: return fake::rng_bytes[(g_rng_index++) & 3];
    case 10: return fake::device_id[0];
    case 11: return fake::device_id[1];
    default: return 0;
  }
}
StubReg& StubReg::operator=(uint32_t v) {
  if (id == 0 && v) fake::events.push_back("rng.start");
  if (id == 1 && v) fake::events.push_back("rng.stop");
  return *this;
}
namespace {
NRF_RNG_Type g_rng;
NRF_FICR_Type g_ficr;
}  // namespace
NRF_RNG_Type* const g_stub_nrf_rng = &g_rng;
NRF_FICR_Type* const g_stub_nrf_ficr = &g_ficr;

// ---- Serial (arduino::UART over USBSerial) -------------------------------------------------

namespace arduino {
void UART::begin(unsigned long) { fake::events.push_back("serial.begin"); }
void UART::end() {}
int UART::available(void) {
  ++fake::usb_available_calls;
  return static_cast<int>(fake::usb_to_board.size());
}
int UART::peek(void) { return fake::usb_to_board.empty() ? -1 : fake::usb_to_board[0]; }
int UART::read(void) {
  ++fake::usb_read_calls;
  if (fake::usb_to_board.empty()) return -1;
  const int c = fake::usb_to_board[0];
  fake::usb_to_board.erase(fake::usb_to_board.begin());
  return c;
}
void UART::flush(void) {}
size_t UART::write(uint8_t) {
  ++fake::usb_write_calls;
  return 0;
}
size_t UART::write(const uint8_t*, size_t) {
  ++fake::usb_write_calls;  // would block while the host does not read: the HAL must not call it
  return 0;
}
UART::operator bool() {
  ++fake::usb_operator_bool_calls;
  delay(1);  // USBSerial::operator bool(): "call delay() to force rescheduling"
  return fake::usb_dtr;
}
void UART::setTimeout(unsigned long) {}
size_t UART::readBytes(char* buffer, size_t length) {
  ++fake::usb_readbytes_calls;
  size_t n = 0;
  while (n < length && !fake::usb_to_board.empty()) {
    buffer[n++] = static_cast<char>(fake::usb_to_board[0]);
    fake::usb_to_board.erase(fake::usb_to_board.begin());
  }
  return n;
}
size_t UART::print(const char*) { return 0; }
size_t UART::print(char) { return 0; }
size_t UART::print(unsigned long, int) { return 0; }
size_t UART::println(const char*) { return 0; }
bool UART::dtr() { return fake::usb_dtr; }

void USBSerial::send_nb(uint8_t* buffer, uint32_t size, uint32_t* actual, bool) {
  ++fake::usb_send_nb_calls;
  *actual = 0;
  if (!fake::usb_dtr || fake::usb_in_flight) return;  // USBCDC::send_nb: nothing while busy
  const uint32_t n = size < 64 ? size : 64;
  fake::usb_received.insert(fake::usb_received.end(), buffer, buffer + n);
  *actual = n;
  fake::usb_in_flight = !fake::usb_host_reads;
}
bool USBSerial::connected() { return fake::usb_dtr; }
int USBSerial::available(void) { return static_cast<int>(fake::usb_to_board.size()); }
int USBSerial::read(void) { return _UART_USB_.read(); }
bool USBSerial::dtr() { return fake::usb_dtr; }
}  // namespace arduino

arduino::UART _UART_USB_;
arduino::UART _UART1_;
arduino::USBSerial _SerialUSB;

// ---- PDM ---------------------------------------------------------------------------------

PDMClass::PDMClass(int, int, int) {}
PDMClass::~PDMClass() {}
int PDMClass::begin(int channels, int rate) {
  fake::events.push_back("pdm.begin " + std::to_string(channels) + " " + std::to_string(rate) +
                         " gain " + std::to_string(fake::pdm_gain) + " buffer " +
                         std::to_string(fake::pdm_buffer_size));
  fake::pdm_running = fake::pdm_begin_ok;
  fake::pdm_overflowed = false;
  g_pdm_block.clear();
  g_pdm_read = 0;
  return fake::pdm_begin_ok ? 1 : 0;
}
void PDMClass::end() {
  fake::events.push_back("pdm.end");
  fake::pdm_running = false;
}
int PDMClass::available() { return static_cast<int>(g_pdm_block.size() - g_pdm_read); }
int PDMClass::read(void* buffer, size_t size) {
  size_t n = g_pdm_block.size() - g_pdm_read;
  if (n > size) n = size;
  memcpy(buffer, g_pdm_block.data() + g_pdm_read, n);
  g_pdm_read += n;
  return static_cast<int>(n);
}
void PDMClass::onReceive(void (*function)(void)) { g_pdm_cb = function; }
void PDMClass::setGain(int gain) {
  fake::pdm_gain = gain;
  fake::events.push_back("pdm.setGain " + std::to_string(gain));
}
void PDMClass::setBufferSize(int size) {
  fake::pdm_buffer_size = size;
  fake::events.push_back("pdm.setBufferSize " + std::to_string(size));
}
size_t PDMClass::getBufferSize() { return static_cast<size_t>(fake::pdm_buffer_size); }
PDMClass PDM(29, 28, 27);  // PIN_PDM_DIN, PIN_PDM_CLK, PIN_PDM_PWR (pins_arduino.h)

// ---- ArduinoBLE ----------------------------------------------------------------------------

BLEDevice::BLEDevice() {}
BLEDevice::~BLEDevice() {}
bool BLEDevice::connected() const { return fake::ble_connected; }
bool BLEDevice::disconnect() { return true; }

BLECharacteristic::BLECharacteristic() {}
BLECharacteristic::BLECharacteristic(const char* uuid, uint16_t permissions, int valueSize,
                                     bool) {
  local_ = new FakeChar{uuid, permissions, valueSize, {}};
  if (permissions & BLEWriteWithoutResponse) fake::g_rx_char = this;
}
BLECharacteristic::BLECharacteristic(const BLECharacteristic& other) : local_(other.local_) {}
BLECharacteristic::~BLECharacteristic() {}
int BLECharacteristic::valueSize() const { return static_cast<FakeChar*>(local_)->size; }
const uint8_t* BLECharacteristic::value() const {
  return static_cast<FakeChar*>(local_)->value.data();
}
int BLECharacteristic::valueLength() const {
  return static_cast<int>(static_cast<FakeChar*>(local_)->value.size());
}
int BLECharacteristic::writeValue(const uint8_t value[], int length, bool) {
  FakeChar* c = static_cast<FakeChar*>(local_);
  if (length > c->size) length = c->size;  // BLELocalCharacteristic: min(length, valueSize)
  c->value.assign(value, value + length);
  if (!(c->props & BLENotify) || !fake::ble_connected || !fake::ble_subscribed) return 0;
  // ATTClass::handleNotify: truncated to MTU - 3, silently.
  const int n = length < fake::ble_mtu - 3 ? length : fake::ble_mtu - 3;
  fake::notifications.emplace_back(value, value + n);
  if (fake::ble_drop_after_notifications >= 0 &&
      static_cast<int>(fake::notifications.size()) >= fake::ble_drop_after_notifications) {
    fake::ble_connected = false;  // the central vanished; the controller reports it later
    fake::ble_drop_after_notifications = -1;
  }
  return n;
}
bool BLECharacteristic::subscribed() { return fake::ble_subscribed; }
void BLECharacteristic::setEventHandler(int event, BLECharacteristicEventHandler handler) {
  if (event == BLEWritten) g_written_handler = handler;
}

BLEService::BLEService() {}
BLEService::BLEService(const char*) {}
BLEService::~BLEService() {}
void BLEService::addCharacteristic(BLECharacteristic&) {}

BLELocalDevice::~BLELocalDevice() {}
int BLELocalDevice::begin() {
  fake::events.push_back("ble.begin");
  return fake::ble_begin_ok ? 1 : 0;
}
void BLELocalDevice::end() {}
void BLELocalDevice::poll() {
  fake::now_ms += 1;  // a poll of the HCI takes time (loops that wait on millis() end)
  if (fake::g_rx_char != nullptr) fake::deliver_central_writes(*fake::g_rx_char);
}
void BLELocalDevice::poll(unsigned long) { poll(); }
bool BLELocalDevice::connected() const {
  ++fake::ble_connected_calls;
  return fake::ble_connected;
}
bool BLELocalDevice::disconnect() {
  fake::events.push_back("ble.disconnect");
  fake::ble_connected = false;
  return true;
}
bool BLELocalDevice::setAdvertisedService(const BLEService&) { return true; }
bool BLELocalDevice::setLocalName(const char* name) {
  fake::events.push_back(std::string("ble.name ") + name);
  return true;
}
void BLELocalDevice::setDeviceName(const char*) {}
void BLELocalDevice::addService(BLEService&) {}
int BLELocalDevice::advertise() {
  fake::events.push_back("ble.advertise");
  return 1;
}
void BLELocalDevice::stopAdvertise() {}
BLEDevice BLELocalDevice::central() { return BLEDevice(); }
void BLELocalDevice::setEventHandler(BLEDeviceEvent, BLEDeviceEventHandler) {}
namespace {
BLELocalDevice g_ble;
}  // namespace
BLELocalDevice& BLE = g_ble;

ATTClass::~ATTClass() {}
bool ATTClass::connected() const { return fake::ble_connected; }
bool ATTClass::connected(uint16_t handle) const {
  return fake::ble_connected && handle == fake::ble_handle;
}
uint16_t ATTClass::mtu(uint16_t handle) const {
  return fake::ble_connected && handle == fake::ble_handle ? fake::ble_mtu : 23;
}
bool ATTClass::disconnect() { return BLE.disconnect(); }
namespace {
ATTClass g_att;
}  // namespace
ATTClass& ATT = g_att;
