// Declarations-only stand-ins for the Arduino mbed core, used by `make arduino-syntax` to
// syntax-check hal/arduino/ on a machine without the Arduino toolchain. They copy the
// signatures of ArduinoCore-mbed as documented; they prove nothing about behaviour, and the
// real core may differ (the sketch is NOT compiled by CI for the board).
#pragma once
#include <stddef.h>
#include <stdint.h>

#define HIGH 0x1
#define LOW 0x0
#define INPUT_PULLUP 0x2
#define OUTPUT 0x1
enum PinName_ { D2 = 2, D3, D4, D5, LEDR = 22, LEDG = 23, LEDB = 24, LED_BUILTIN = 13 };
void pinMode(uint8_t pin, uint8_t mode);
void digitalWrite(uint8_t pin, uint8_t value);
int digitalRead(uint8_t pin);
unsigned long millis();
void delay(unsigned long ms);
void noInterrupts();
void interrupts();
void NVIC_SystemReset();

class SerialUSB_ {
 public:
  void begin(unsigned long baud);
  int available();
  int read();
  size_t write(const uint8_t* data, size_t n);
  void flush();
  explicit operator bool();
};
class UART_ {
 public:
  void begin(unsigned long baud);
  size_t print(const char* s);
  size_t print(char c);
  size_t print(unsigned long v);
  size_t println(const char* s);
};
extern SerialUSB_ Serial;
extern UART_ Serial1;

struct NRF_RNG_Type {
  volatile uint32_t TASKS_START, TASKS_STOP, EVENTS_VALRDY, CONFIG, VALUE;
};
struct NRF_FICR_Type {
  volatile uint32_t DEVICEID[2];
};
extern NRF_RNG_Type* NRF_RNG;
extern NRF_FICR_Type* NRF_FICR;
#define RNG_CONFIG_DERCEN_Enabled 1u
#define RNG_CONFIG_DERCEN_Pos 0u
