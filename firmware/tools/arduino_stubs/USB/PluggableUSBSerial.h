// Stand-in for ArduinoCore-mbed cores/arduino/USB/PluggableUSBSerial.h + USBCDC.h: the object
// behind `Serial` on the Nano 33 BLE (see ../Arduino.h). Only what tinyfed calls.
//   send_nb()   USBCDC: copies what fits into the 64-byte endpoint buffer and starts the
//               transfer; *actual = 0 while a packet is still in flight or no terminal is
//               connected. Never waits (USBCDC::send() and write() do).
//   connected() the terminal state (DTR), without the delay(1) of operator bool().
#pragma once
#include <stdint.h>

#include "../Arduino.h"

namespace arduino {
class USBSerial {
 public:
  void send_nb(uint8_t* buffer, uint32_t size, uint32_t* actual, bool now = true);
  bool connected();
  int available(void);
  int read(void);
  bool dtr();
};
}  // namespace arduino
extern arduino::USBSerial _SerialUSB;
