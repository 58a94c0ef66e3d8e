// See arduino_hal.h. Written against ArduinoCore-mbed 4.5.0 (the Nano 33 BLE variant: PDM
// library, USB CDC) and ArduinoBLE 2.0.1; what each library call does is noted where it
// matters (tools/arduino_stubs/ copies the signatures, tests/test_arduino_hal.cpp runs this
// file against fakes of them). One file of ~550 lines: the whole board HAL, in the sections
// below (TX queue, microphone, BLE, transports, boot, loop), kept together as the board port.
#include "arduino_hal.h"

#include <Arduino.h>
#include <ArduinoBLE.h>
#include <PDM.h>
#include <USB/PluggableUSBSerial.h>
#include <utility/ATT.h>

#include "../../core/link_spec.h"
#include "../../core/text.h"

namespace tinyfed {

namespace {

// ---- constants, with where they come from ------------------------------------------------

// The paper's four push-buttons: D2, D3, D4 train keyword 1..3, D5 classifies.
constexpr uint8_t kButtonPins[kButtons] = {D2, D3, D4, D5};
// PDM: one channel at 16 kHz (the MFCC's input rate, core/mfcc.h). Gain and buffer as the
// paper's code: PDM.setGain(80) is +20 dB (nRF PDM GAINL: 0x28 = 0 dB, 0.5 dB per step; the
// library's default 20 is -10 dB, 30 dB quieter), PDM.setBufferSize(4096): blocks of 2,048
// samples, one callback every 128 ms.
constexpr int kPdmChannels = 1;
constexpr int kPdmRate = 16000;
constexpr int kPdmGain = 80;
constexpr int kPdmBufferBytes = 4096;
// A working microphone delivers its first block within 128 ms of PDM.begin(); begin() waits
// up to this long to say whether it does (boot report).
constexpr uint32_t kPdmBootCheckMs = 400;
// Scratch to drain PDM blocks nobody records (the library stops the PDM for good if a block
// is not read empty before the next one: PDM.cpp IrqHandler "buffer overflow, stop").
constexpr size_t kPdmScratchBytes = 512;
// One TX queue for whichever transport is active: one READ window of full frames (spec.py
// DEFAULT_WINDOW x MAX_FRAME_WIRE = 1,936 bytes) fits, rounded up to a power of two.
constexpr size_t kTxQueue = 2048;
// BLE receive ring: one window of full frames too.
constexpr size_t kBleRxRing = 2048;
// USB CDC full-speed bulk packet (USBCDC.h CDC_MAX_PACKET_SIZE): what one send_nb() takes.
constexpr size_t kUsbPacket = 64;
// BLE: ATT's default MTU is 23 (Bluetooth Core spec, ATT_MTU default for LE) until the
// central asks for more; a notification carries MTU - 3 bytes (ArduinoBLE's
// ATTClass::handleNotify truncates longer values silently). Pieces are capped at 244 bytes
// (MTU 247, the usual LE maximum; the characteristic's value size, and a full 242-byte frame
// fits in one).
constexpr uint16_t kAttDefaultMtu = 23;
constexpr uint16_t kAttHeader = 3;
constexpr int kBleValueBytes = 244;
// Notifications per loop(): each goes through HCIClass::sendAclPkt, which busy-waits while the
// controller's ACL buffers are full. A few per loop keep that wait short and let the buttons
// and the USB port be served between them; at MTU 247 four carry ~1 KB per loop.
constexpr int kBleNotifyPerLoop = 4;
// Connection handles scanned for the MTU: ArduinoBLE exposes no handle of the connected
// central, and ATT.mtu(handle) answers 23 for a handle with no peer. Cordio's link layer uses
// the index of the connection's context as its handle (lctr_int_conn.h:
// LCTR_GET_CONN_HANDLE(pCtx) = pCtx - pLctrConnTbl), below DM_CONN_MAX = 5 on this board (the
// variant's mbed_config.h); 8 covers them. README checklist item 10 confirms it on hardware.
constexpr uint16_t kBleHandlesScanned = 8;
// RESET: the core calls reboot() 250 ms after its ACK (core/device.h kResetDelayMs); here the
// rest of the output gets this long to leave, and a central this long to see the disconnect.
constexpr uint32_t kRebootDrainMs = 100;
constexpr uint32_t kRebootDisconnectMs = 100;
// Set to true to mirror log lines on the hardware UART (TX pin, Serial1, 115200 baud): USB
// Serial carries the link and must not see text.
constexpr bool kDebugUart = false;

// ---- the TX queue: whole frames in, any pieces out -----------------------------------------

class TxQueue {
 public:
  size_t room() const { return kTxQueue - count_; }
  bool empty() const { return count_ == 0; }
  void clear() { head_ = tail_ = count_ = 0; }
  // All n bytes, or nothing (a frame is never cut: the peer's parser would resync at the next
  // delimiter, but the frame would be lost anyway).
  bool push(const uint8_t* data, size_t n) {
    if (n > room()) return false;
    for (size_t i = 0; i < n; ++i) {
      buf_[head_] = data[i];
      head_ = (head_ + 1) % kTxQueue;
    }
    count_ += n;
    return true;
  }
  // Copies up to cap queued bytes into out without removing them.
  size_t peek(uint8_t* out, size_t cap) const {
    const size_t n = cap < count_ ? cap : count_;
    for (size_t i = 0; i < n; ++i) out[i] = buf_[(tail_ + i) % kTxQueue];
    return n;
  }
  void consume(size_t n) {
    tail_ = (tail_ + n) % kTxQueue;
    count_ -= n;
  }

 private:
  uint8_t buf_[kTxQueue];
  size_t head_ = 0, tail_ = 0, count_ = 0;
};

TxQueue g_tx;
uint32_t g_tx_dropped = 0;          // frames dropped whole since the last notice
uint8_t g_piece[kBleValueBytes];    // one USB packet or one notification

// ---- microphone (PDM interrupt) ----------------------------------------------------------

uint8_t g_pdm_scratch[kPdmScratchBytes];
int16_t* volatile g_rec_buf = nullptr;  // the core's audio buffer while recording
volatile size_t g_rec_len = 0;
volatile size_t g_rec_pos = 0;
volatile uint32_t g_pdm_blocks = 0;  // callbacks since boot (the boot check)
bool g_pdm_ok = false;

void on_pdm_data() {
  // The PDM interrupt, once per 4,096-byte block: read it all, into the recording if one runs.
  int avail = PDM.available();
  while (avail > 0) {
    int got = 0;
    int16_t* dst = g_rec_buf;
    if (dst != nullptr && g_rec_pos < g_rec_len) {
      const size_t want = (g_rec_len - g_rec_pos) * 2;
      const size_t n = static_cast<size_t>(avail) < want ? static_cast<size_t>(avail) : want;
      got = PDM.read(dst + g_rec_pos, n & ~static_cast<size_t>(1));
      if (got > 0) g_rec_pos = g_rec_pos + static_cast<size_t>(got) / 2;
      if (g_rec_pos >= g_rec_len) g_rec_buf = nullptr;  // done: stop writing into the core
    } else {
      const size_t n = static_cast<size_t>(avail) < sizeof g_pdm_scratch
                           ? static_cast<size_t>(avail) : sizeof g_pdm_scratch;
      got = PDM.read(g_pdm_scratch, n);
    }
    if (got <= 0) break;
    avail -= got;
  }
  g_pdm_blocks = g_pdm_blocks + 1;
}

bool pdm_start() {
  PDM.onReceive(on_pdm_data);
  PDM.setBufferSize(kPdmBufferBytes);  // before begin(): begin() allocates the two halves
  PDM.setGain(kPdmGain);
  return PDM.begin(kPdmChannels, kPdmRate) != 0;
}

// ---- BLE ---------------------------------------------------------------------------------

BLEService g_service(link::kBleServiceUuid);
BLECharacteristic g_rx_char(link::kBleRxCharUuid, BLEWriteWithoutResponse | BLEWrite,
                            kBleValueBytes);
BLECharacteristic g_tx_char(link::kBleTxCharUuid, BLENotify, kBleValueBytes);
uint8_t g_ble_rx[kBleRxRing];
size_t g_ble_head = 0;  // written by the BLEWritten handler (inside BLE.poll(), not an IRQ)
size_t g_ble_tail = 0;
uint32_t g_ble_rx_lost = 0;
bool g_ble_ok = false;
uint16_t g_ble_mtu = kAttDefaultMtu;
char g_ble_name[16];

void on_rx_written(BLEDevice, BLECharacteristic c) {
  const uint8_t* v = c.value();
  const int n = c.valueLength();
  for (int i = 0; i < n; ++i) {
    const size_t next = (g_ble_head + 1) % kBleRxRing;
    if (next == g_ble_tail) {  // full: the parser will see a broken frame and say so
      ++g_ble_rx_lost;
      break;
    }
    g_ble_rx[g_ble_head] = v[i];
    g_ble_head = next;
  }
}

// The ATT MTU of the connected central (23 until it asks for more).
uint16_t ble_mtu() {
  uint16_t mtu = kAttDefaultMtu;
  for (uint16_t h = 0; h < kBleHandlesScanned; ++h) {
    const uint16_t m = ATT.mtu(h);
    if (m > mtu) mtu = m;
  }
  return mtu;
}

// ---- transports --------------------------------------------------------------------------

enum class Transport : uint8_t { kNone, kUsb, kBle };
Transport g_transport = Transport::kNone;
bool g_switched = false;
int g_notify_budget = kBleNotifyPerLoop;

Transport current_transport() {
  // One host at a time: BLE while a central is connected, else USB while a terminal has the
  // port open (DTR). USBSerial::connected() reads that state without operator bool's delay(1).
  if (g_ble_ok && BLE.connected()) return Transport::kBle;
  if (_SerialUSB.connected()) return Transport::kUsb;
  return Transport::kNone;
}

void pump_usb() {
  // USBCDC::send_nb copies at most one 64-byte packet and returns 0 while it is in flight:
  // never waits. A host that keeps the port open but does not read leaves the packet in
  // flight; the queue fills and link_write() drops whole frames, like the virtual board.
  while (!g_tx.empty()) {
    const size_t n = g_tx.peek(g_piece, kUsbPacket);
    uint32_t sent = 0;
    _SerialUSB.send_nb(g_piece, static_cast<uint32_t>(n), &sent, true);
    if (sent == 0) return;
    g_tx.consume(sent);
  }
}

void pump_ble() {
  // Pieces of up to MTU - 3 bytes, at most kBleNotifyPerLoop per loop, each only while the
  // central is still connected and subscribed (a central gone mid-burst stops the burst).
  size_t piece = static_cast<size_t>(g_ble_mtu - kAttHeader);
  if (piece > sizeof g_piece) piece = sizeof g_piece;
  while (!g_tx.empty() && g_notify_budget > 0) {
    if (!BLE.connected() || !g_tx_char.subscribed()) return;
    const size_t n = g_tx.peek(g_piece, piece);
    --g_notify_budget;
    if (g_tx_char.writeValue(g_piece, static_cast<int>(n)) <= 0) return;
    g_tx.consume(n);
  }
}

// Copies a NUL-terminated text into dst[cap], cut to fit.
void copy_text(char* dst, size_t cap, const char* src) {
  size_t i = 0;
  for (; i + 1 < cap && src[i] != '\0'; ++i) dst[i] = src[i];
  dst[i] = '\0';
}

}  // namespace

ButtonWiring decide_wiring(const bool high_with_pullup[4], const bool high_with_pulldown[4]) {
  int pulled_down = 0;
  for (int i = 0; i < 4; ++i) {
    if (!high_with_pullup[i] && !high_with_pulldown[i]) ++pulled_down;
  }
  return pulled_down >= 3 ? ButtonWiring::kPullDownTo3v3 : ButtonWiring::kPullUpToGnd;
}

// ---------------------------------------------------------------------------- boot

bool ArduinoHal::begin() {
  // 1. The boot id, from the RNG peripheral, before BLE.begin(): the BLE stack drives the RNG
  // by interrupt once it runs (nRF52840 PS 6.22: one byte per VALRDY event, bias correction).
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
  boot_random_ = v;
  random_calls_ = 0;
  g_tx.clear();
  g_tx_dropped = 0;
  g_ble_head = g_ble_tail = 0;
  g_switched = false;
  g_ble_mtu = kAttDefaultMtu;

  // 2. LEDs and buttons.
  pinMode(LEDR, OUTPUT);
  pinMode(LEDG, OUTPUT);
  pinMode(LEDB, OUTPUT);
  pinMode(LED_BUILTIN, OUTPUT);
  set_leds(0);
#if TINYFED_BUTTON_WIRING == 2
  bool up[kButtons], down[kButtons];
  for (int i = 0; i < kButtons; ++i) pinMode(kButtonPins[i], INPUT_PULLUP);
  delay(2);  // the pins' RC settles in microseconds; 2 ms is generous
  for (int i = 0; i < kButtons; ++i) up[i] = digitalRead(kButtonPins[i]) == HIGH;
  for (int i = 0; i < kButtons; ++i) pinMode(kButtonPins[i], INPUT_PULLDOWN);
  delay(2);
  for (int i = 0; i < kButtons; ++i) down[i] = digitalRead(kButtonPins[i]) == HIGH;
  wiring_detected_ = true;
  set_wiring(decide_wiring(up, down));
#elif TINYFED_BUTTON_WIRING == 1
  set_wiring(ButtonWiring::kPullDownTo3v3);
#else
  set_wiring(ButtonWiring::kPullUpToGnd);
#endif

  // 3. USB serial (the rate is nominal on CDC). Reads never wait (link_read).
  Serial.begin(link::kBaudRate);
  Serial.setTimeout(0);
  if (kDebugUart) Serial1.begin(115200);

  // 4. Microphone, and whether it delivers.
  g_pdm_blocks = 0;
  g_pdm_ok = pdm_start();
  const uint32_t t0 = ::millis();
  while (g_pdm_ok && g_pdm_blocks == 0 && ::millis() - t0 < kPdmBootCheckMs) delay(1);
  const bool mic_alive = g_pdm_ok && g_pdm_blocks > 0;

  // 5. BLE: one service, RX (host writes) and TX (board notifies), same byte stream as USB.
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

  Text t;
  t.str("board: buttons ")
      .str(wiring_ == ButtonWiring::kPullUpToGnd ? "to GND, pull-ups" : "to 3.3 V, pull-downs")
      .str(wiring_detected_ ? " (detected)" : " (build option)").str("; microphone ")
      .str(!g_pdm_ok ? "FAILED to start" : (mic_alive ? "ok" : "started but SILENT"))
      .str(" (gain ").u32(kPdmGain).str(", ").u32(kPdmBufferBytes).str(" B blocks); BLE ");
  if (g_ble_ok) {
    t.str("advertising as ").str(g_ble_name);
  } else {
    t.str("FAILED to start");
  }
  copy_text(boot_report_, sizeof boot_report_, t.c_str());
  g_transport = current_transport();
  return mic_alive && g_ble_ok;
}

void ArduinoHal::set_wiring(ButtonWiring w) {
  wiring_ = w;
  // Pull-down wiring: the internal pull-down in parallel with the external one (harmless, and
  // a missing resistor does not leave the pin floating).
  const PinMode mode = w == ButtonWiring::kPullUpToGnd ? INPUT_PULLUP : INPUT_PULLDOWN;
  for (uint8_t pin : kButtonPins) pinMode(pin, mode);
}

// ---------------------------------------------------------------------------- loop

void ArduinoHal::notice(const char* text) {
  copy_text(notice_, sizeof notice_, text);
  notice_pending_ = true;
}

const char* ArduinoHal::take_notice() {
  if (boot_report_pending_) {  // a new host missed the boot: the report follows its HELLO
    boot_report_pending_ = false;
    return boot_report_;
  }
  if (!notice_pending_ && g_tx_dropped > 0 && g_tx.room() >= link::kMaxFrameWire) {
    Text t;
    t.str("link: ").u32(g_tx_dropped).str(" frames dropped, the host did not read them");
    g_tx_dropped = 0;
    notice(t.c_str());
  }
  if (!notice_pending_) return nullptr;
  notice_pending_ = false;
  return notice_;
}

void ArduinoHal::check_transport() {
  const Transport now = current_transport();
  if (now == Transport::kBle) {
    const uint16_t mtu = ble_mtu();
    if (mtu != g_ble_mtu) {
      g_ble_mtu = mtu;
      Text t;
      t.str("ble: MTU ").u32(mtu).str(", notifications of ").u32(mtu - kAttHeader).str(" bytes");
      notice(t.c_str());
    }
  }
  if (now == g_transport) return;
  // Another host: what the old one sent or was sent must not mix with the new conversation.
  g_tx.clear();
  g_ble_tail = g_ble_head;
  if (now == Transport::kUsb) {
    while (Serial.available() > 0 && Serial.read() >= 0) {
    }
  }
  if (now == Transport::kBle) g_ble_mtu = ble_mtu();
  const bool was_ble = g_transport == Transport::kBle;
  g_transport = now;
  if (now != Transport::kNone) {
    g_switched = true;
    boot_report_pending_ = true;
  }
  if (now == Transport::kBle) {
    Text t;
    t.str("ble: central connected, MTU ").u32(g_ble_mtu);
    notice(t.c_str());
  } else if (was_ble) {
    g_ble_mtu = kAttDefaultMtu;
    notice(now == Transport::kUsb ? "ble: central disconnected; link back on USB"
                                  : "ble: central disconnected");
  }
}

void ArduinoHal::pump() {
  if (g_transport == Transport::kUsb) pump_usb();
  else if (g_transport == Transport::kBle) pump_ble();
}

void ArduinoHal::poll() {
  if (g_ble_ok) BLE.poll();  // non-blocking without a timeout argument
  g_notify_budget = kBleNotifyPerLoop;
  check_transport();
  pump();
}

uint32_t ArduinoHal::millis() { return ::millis(); }

size_t ArduinoHal::link_read(uint8_t* buf, size_t cap) {
  size_t n = 0;
  if (g_transport == Transport::kBle) {
    while (n < cap && g_ble_tail != g_ble_head) {
      buf[n++] = g_ble_rx[g_ble_tail];
      g_ble_tail = (g_ble_tail + 1) % kBleRxRing;
    }
    return n;
  }
  // USB: one available(), then a block read of what is there (readBytes with timeout 0 never
  // waits; each byte still passes USBSerial::read's lock, the per-byte available() is gone).
  const int avail = Serial.available();
  if (avail <= 0) return 0;
  n = static_cast<size_t>(avail) < cap ? static_cast<size_t>(avail) : cap;
  return Serial.readBytes(buf, n);
}

void ArduinoHal::link_write(const uint8_t* data, size_t n) {
  if (g_transport == Transport::kNone) return;  // nobody listens: dropped whole
  if (!g_tx.push(data, n)) {
    ++g_tx_dropped;  // the queue is full (a host that does not read): dropped whole
    return;
  }
  pump();
}

size_t ArduinoHal::link_room() { return g_transport == Transport::kNone ? 0 : g_tx.room(); }

bool ArduinoHal::link_switched() {
  const bool s = g_switched;
  g_switched = false;
  return s;
}

uint8_t ArduinoHal::buttons() {
  const PinStatus pressed = wiring_ == ButtonWiring::kPullUpToGnd ? LOW : HIGH;
  uint8_t bits = 0;
  for (int i = 0; i < kButtons; ++i) {
    if (digitalRead(kButtonPins[i]) == pressed) bits |= static_cast<uint8_t>(1u << i);
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
  if (!g_pdm_ok) return false;  // the core logs it and stays IDLE
  noInterrupts();
  g_rec_len = n;
  g_rec_pos = 0;
  g_rec_buf = buf;
  interrupts();
  return true;
}

bool ArduinoHal::mic_done() { return g_rec_buf == nullptr && g_rec_pos >= g_rec_len; }

void ArduinoHal::mic_stop() {
  noInterrupts();
  g_rec_buf = nullptr;
  g_rec_len = 0;
  interrupts();
  // The PDM library stops the peripheral for good after an overflow; end() + begin() revives
  // it (begin() reallocates the two 4 KB halves at the same size: no new heap in practice).
  PDM.end();
  g_pdm_ok = pdm_start();
  notice(g_pdm_ok ? "microphone: no data for a whole recording; PDM restarted"
                  : "microphone: no data, and the PDM did not restart");
}

uint32_t ArduinoHal::random32() {
  // The first call (Device::begin at boot) gets the value read before BLE started; a hardware
  // reset starts over. Later calls (none on the board) get a xorshift of it.
  if (random_calls_++ == 0) return boot_random_;
  boot_random_ ^= boot_random_ << 13;
  boot_random_ ^= boot_random_ >> 17;
  boot_random_ ^= boot_random_ << 5;
  return boot_random_;
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
  Serial1.print(static_cast<unsigned long>(::millis()));
  Serial1.print(' ');
  Serial1.print(kLevel[static_cast<uint8_t>(level) & 3]);
  Serial1.print(' ');
  Serial1.println(text);
}

void ArduinoHal::reboot() {
  // RESET was acknowledged 250 ms ago (core/device.h kResetDelayMs). Let what is still queued
  // leave, close a BLE connection cleanly (the central sees a disconnect, not a supervision
  // timeout), then reset. Serial.flush() would not help: it does nothing on this core.
  uint32_t t0 = ::millis();
  while (!g_tx.empty() && ::millis() - t0 < kRebootDrainMs) {
    if (g_ble_ok) BLE.poll();
    g_notify_budget = kBleNotifyPerLoop;
    pump();
  }
  if (g_ble_ok && BLE.connected()) {
    BLE.disconnect();
    t0 = ::millis();
    while (::millis() - t0 < kRebootDisconnectMs) BLE.poll();
  }
  NVIC_SystemReset();
}

}  // namespace tinyfed
