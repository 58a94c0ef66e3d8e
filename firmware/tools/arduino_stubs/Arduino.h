// Declaration stand-ins for the Arduino mbed core (ArduinoCore-mbed 4.5.0, the version that
// PlatformIO's nordicnrf52 10.11.0 installs, with ArduinoCore-API underneath), used by
// `make arduino-syntax` and, with the behavioural fakes of tests/arduino_fakes.cpp, by
// `make test` (tests/test_arduino_hal.cpp). Each declaration copies the real one's signature,
// including the details that matter to tinyfed:
//   * digitalRead returns PinStatus, pinMode takes PinMode (ArduinoCore-API api/Common.h);
//   * Serial is `arduino::UART _UART_USB_` (cores/arduino/Serial.h, `#define Serial`), whose
//     operator bool() forwards to USBSerial's, which calls delay(1) (PluggableUSBSerial.h);
//     its availableForWrite() is Print's default, which returns 0 (api/Print.h);
//   * interrupts()/noInterrupts() are macros (cores/arduino/Arduino.h).
// They prove no behaviour of the real core; firmware/README.md says what only hardware shows.
#pragma once
#include <stddef.h>
#include <stdint.h>

// ---- ArduinoCore-API api/Common.h ----
typedef enum { LOW = 0, HIGH = 1, CHANGE = 2, FALLING = 3, RISING = 4 } PinStatus;
typedef enum {
  INPUT = 0x0,
  OUTPUT = 0x1,
  INPUT_PULLUP = 0x2,
  INPUT_PULLDOWN = 0x3,
  OUTPUT_OPENDRAIN = 0x4,
} PinMode;
typedef uint8_t pin_size_t;
void pinMode(pin_size_t pinNumber, PinMode pinMode);
void digitalWrite(pin_size_t pinNumber, PinStatus status);
PinStatus digitalRead(pin_size_t pinNumber);
unsigned long millis(void);
void delay(unsigned long);
void delayMicroseconds(unsigned int us);

// ---- variants/ARDUINO_NANO33BLE/pins_arduino.h ----
#define D2 (2u)
#define D3 (3u)
#define D4 (4u)
#define D5 (5u)
#define PIN_LED (13u)
#define LED_BUILTIN PIN_LED
#define LEDR (22u)
#define LEDG (23u)
#define LEDB (24u)

// ---- cores/arduino/Arduino.h: macros over CMSIS ----
void __enable_irq(void);
void __disable_irq(void);
#define interrupts() __enable_irq()
#define noInterrupts() __disable_irq()
// CMSIS core_cm4.h: __NO_RETURN void __NVIC_SystemReset(void); NVIC_SystemReset is a macro.
void __NVIC_SystemReset(void);
#define NVIC_SystemReset __NVIC_SystemReset

// ---- ArduinoCore-API api/Stream.h + api/Print.h, as arduino::UART inherits them ----
namespace arduino {
class UART {
 public:
  void begin(unsigned long baudrate);
  void end();
  int available(void);
  int peek(void);
  int read(void);
  void flush(void);
  size_t write(uint8_t c);
  size_t write(const uint8_t* buffer, size_t size);
  operator bool();                   // USB: USBSerial::operator bool(), which calls delay(1)
  virtual int availableForWrite() { return 0; }  // Print's default: UART does not override it
  void setTimeout(unsigned long timeout);
  size_t readBytes(char* buffer, size_t length);
  size_t readBytes(uint8_t* buffer, size_t length) {
    return readBytes(reinterpret_cast<char*>(buffer), length);
  }
  size_t print(const char* s);
  size_t print(char c);
  size_t print(unsigned long n, int base = 10);
  size_t println(const char* s);
  bool dtr();
  virtual ~UART() = default;
};
}  // namespace arduino
extern arduino::UART _UART_USB_;
extern arduino::UART _UART1_;
#define Serial _UART_USB_
#define Serial1 _UART1_

// ---- nRF52840 MDK (nrf52840.h): the registers tinyfed touches ----
// The real fields are `volatile uint32_t`; here each is an object whose reads and writes the
// fakes see (the RNG's VALRDY event must rise while the HAL waits for it). Code that compiles
// against these compiles against the real registers: assignment, comparison, & and <<.
struct StubReg {
  int id;
  operator uint32_t() const;
  StubReg& operator=(uint32_t v);
};
typedef struct {
  StubReg TASKS_START{0};
  StubReg TASKS_STOP{1};
  StubReg EVENTS_VALRDY{2};
  StubReg CONFIG{3};
  StubReg VALUE{4};
} NRF_RNG_Type;
typedef struct {
  StubReg DEVICEID[2]{{10}, {11}};
} NRF_FICR_Type;
extern NRF_RNG_Type* const g_stub_nrf_rng;
extern NRF_FICR_Type* const g_stub_nrf_ficr;
#define NRF_RNG g_stub_nrf_rng
#define NRF_FICR g_stub_nrf_ficr
#define RNG_CONFIG_DERCEN_Pos (0UL)
#define RNG_CONFIG_DERCEN_Enabled (1UL)
