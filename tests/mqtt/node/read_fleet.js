// Reads a tinyfed fleet's topics as any MQTT v5 client in another language would, and prints
// one JSON line per message: its topic, the MQTT v5 Content Type and Payload Format Indicator
// the publisher set, and the payload parsed as JSON when those say it is UTF-8 JSON.
//
//   node read_fleet.js mqtt://127.0.0.1:1883 FLEET COUNT
//
// Used by tests/mqtt/test_node_client.py; exits 0 after COUNT messages, 1 after 20 s.
"use strict";
const mqtt = require("mqtt");

const [url, fleet, countText] = process.argv.slice(2);
const count = Number(countText);
const client = mqtt.connect(url, { protocolVersion: 5, clean: true, reconnectPeriod: 0 });
let seen = 0;
const timer = setTimeout(() => {
  console.error(`timed out after ${seen} of ${count} messages`);
  process.exit(1);
}, 20000);

client.on("connect", () => {
  client.subscribe(`tinyfed/${fleet}/#`, { qos: 1 }, (err) => {
    if (err) {
      console.error(`subscribe failed: ${err.message}`);
      process.exit(1);
    }
  });
});

client.on("message", (topic, payload, packet) => {
  const props = packet.properties || {};
  const line = {
    topic,
    contentType: props.contentType === undefined ? null : props.contentType,
    payloadFormatIndicator:
      props.payloadFormatIndicator === undefined ? null : props.payloadFormatIndicator,
    bytes: payload.length,
    json: null,
  };
  if (line.payloadFormatIndicator === true && line.contentType === "application/json") {
    line.json = JSON.parse(payload.toString("utf8"));
  }
  console.log(JSON.stringify(line));
  seen += 1;
  if (seen >= count) {
    clearTimeout(timer);
    process.exit(0);
  }
});

client.on("error", (err) => {
  console.error(`mqtt error: ${err.message}`);
  process.exit(1);
});
