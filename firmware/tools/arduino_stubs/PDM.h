// Stand-in for ArduinoCore-mbed's PDM library (libraries/PDM/src/PDM.h; the nRF52 version in
// src/nrf52/PDM.cpp). Behaviour the HAL relies on:
//   * setGain(g) writes the nRF PDM GAINL/GAINR registers (0x28 = 0 dB, 0.5 dB steps; the
//     library's default is 20 = -10 dB, the paper's code sets 80 = +20 dB);
//   * setBufferSize(n): each half of the double buffer is n bytes (default 512), allocated
//     by begin()/setBufferSize() with realloc;
//   * the onReceive callback runs in the PDM interrupt when a half is full; if the previous
//     half was not read empty by then, the library disables the PDM (the microphone stops
//     for good until end() + begin()).
#pragma once
#include <stddef.h>

class PDMClass {
 public:
  PDMClass(int dinPin, int clkPin, int pwrPin);
  virtual ~PDMClass();
  int begin(int channels, int sampleRate);
  void end();
  virtual int available();
  virtual int read(void* buffer, size_t size);
  void onReceive(void (*)(void));
  void setGain(int gain);
  void setBufferSize(int bufferSize);
  size_t getBufferSize();
};
extern PDMClass PDM;
