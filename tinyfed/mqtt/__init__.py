"""The MQTT side of tinyfed (library layer).

* :mod:`tinyfed.mqtt.contract` — the MQTT contract: topics, payloads and their codecs, shared by
  the aggregator, the gateways and monitors;
* :mod:`tinyfed.mqtt.payloads` — the contract's payloads as frozen dataclasses (re-exported by
  :mod:`tinyfed.mqtt.contract`);
* :mod:`tinyfed.mqtt.fields` — the contract's limits and field checks (re-exported by
  :mod:`tinyfed.mqtt.contract`);
* :mod:`tinyfed.mqtt.session` — broker URLs, credentials, TLS, client creation and connection,
  log throttling;
* :mod:`tinyfed.mqtt.adapter` — :class:`~tinyfed.mqtt.adapter.MqttSession`, the one MQTT session
  adapter of the aggregator, the gateway and the monitor (connection, retained status and Last
  Will, reconnect logging, orderly exit, one hand-off of events from paho's thread), and the
  asyncio driver for thousands of sessions in one process.
* :mod:`tinyfed.mqtt.inbox` — the events paho's network thread hands to the application and
  the bounded inbox that carries them (re-exported by :mod:`tinyfed.mqtt.adapter`).
"""
