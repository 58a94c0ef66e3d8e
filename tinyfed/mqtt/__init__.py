"""The MQTT side of tinyfed (library layer).

* :mod:`tinyfed.mqtt.contract` — the MQTT contract: topics, payloads and their codecs, shared by
  the aggregator, the gateways and monitors;
* :mod:`tinyfed.mqtt.fields` — the contract's limits and field checks (re-exported by
  :mod:`tinyfed.mqtt.contract`);
* :mod:`tinyfed.mqtt.session` — broker URLs, credentials, TLS, client creation and connection,
  the asyncio driver, log throttling.
* :mod:`tinyfed.mqtt.inbox` — the bounded hand-off from paho's network thread to the
  application (holds whatever the broker does with the Receive Maximum).
"""
