// Stand-in for ArduinoBLE (see Arduino.h in this folder).
#pragma once
#include <stdint.h>
enum BLECharacteristicEvent { BLESubscribed = 0, BLEUnsubscribed, BLERead, BLEWritten };
enum BLEProperty {
  BLEBroadcast = 0x01, BLERead_ = 0x02, BLEWriteWithoutResponse = 0x04, BLEWrite = 0x08,
  BLENotify = 0x10, BLEIndicate = 0x20
};
class BLEDevice {};
class BLECharacteristic;
typedef void (*BLECharacteristicEventHandler)(BLEDevice device, BLECharacteristic characteristic);
class BLECharacteristic {
 public:
  BLECharacteristic(const char* uuid, uint8_t properties, int valueSize, bool fixedLength = false);
  const uint8_t* value() const;
  int valueLength() const;
  int writeValue(const uint8_t value[], int length, bool withResponse = true);
  bool subscribed();
  void setEventHandler(int event, BLECharacteristicEventHandler eventHandler);
};
class BLEService {
 public:
  explicit BLEService(const char* uuid);
  void addCharacteristic(BLECharacteristic& characteristic);
};
class BLELocalDevice {
 public:
  int begin();
  void poll();
  bool connected() const;
  bool setLocalName(const char* localName);
  void setDeviceName(const char* deviceName);
  bool setAdvertisedService(const BLEService& service);
  void addService(BLEService& service);
  int advertise();
};
extern BLELocalDevice BLE;
