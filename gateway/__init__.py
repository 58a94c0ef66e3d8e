"""The gateway: one process per board, bridging its link (serial, BLE, TCP) to MQTT."""
