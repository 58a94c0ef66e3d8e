// Stand-in for ArduinoCore-mbed's PDM library (see Arduino.h in this folder).
#pragma once
#include <stddef.h>
class PDMClass {
 public:
  int begin(int channels, int sampleRate);
  void end();
  int available();
  int read(void* buffer, size_t size);
  void onReceive(void (*function)(void));
  void setGain(int gain);
  void setBufferSize(int bufferSize);
};
extern PDMClass PDM;
