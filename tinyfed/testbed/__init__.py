"""Test and demo infrastructure (services layer; imports only the library).

* :mod:`tinyfed.testbed.broker` — a private Mosquitto on a free port (tests, demo, benches);
* :mod:`tinyfed.testbed.virtual_board` — builds and starts the compiled virtual board;
* :mod:`tinyfed.testbed.fake_board` — the board's side of the link protocol in this process (real
  frames, no compiler, no pty), for fast tests of the link client;
* :mod:`tinyfed.testbed.vectors` — the shared test vectors in ``vectors/``;
"""
