# syntax=docker/dockerfile:1
# tinyfed's services in one image: the aggregator, gateways (serial, TCP, BLE) and the virtual
# board. Built by docker-compose.yml (`build: .`); the entrypoint is the `tinyfed` command.
#
#   docker build -t tinyfed:local .
#   docker run --rm tinyfed:local --help

# ---- the virtual board: the firmware's portable core with the host HAL (firmware/Makefile)
FROM python:3.11-slim AS virtual-board
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY firmware/ firmware/
RUN make -C firmware -j"$(nproc)" host \
 && install -m 0755 firmware/build/host/tinyfed-virtual-board /usr/local/bin/

# ---- the services
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# socat serves a virtual board's link on TCP; libstdc++6 is the virtual board's C++ runtime;
# espeak-ng synthesizes the scripted users' words (the virtual-users service).
RUN apt-get update \
 && apt-get install -y --no-install-recommends socat libstdc++6 espeak-ng \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/tinyfed
COPY pyproject.toml README.md ./
# One import package, tinyfed: tinyfed/aggregator, tinyfed/gateway and tinyfed/bench are relative
# symlinks (COPY keeps them as links) to the top-level folders copied beside it, and the wheel
# that pip builds follows them, so the image has tinyfed.aggregator, tinyfed.gateway and
# tinyfed.bench and no top-level aggregator/gateway/bench packages.
COPY tinyfed/ tinyfed/
COPY aggregator/ aggregator/
COPY gateway/ gateway/
COPY bench/ bench/
# [ble]: bleak, so the same image runs BLE gateways.
RUN pip install --no-cache-dir ".[ble]" \
 && rm -rf build ./*.egg-info
COPY --from=virtual-board /usr/local/bin/tinyfed-virtual-board /usr/local/bin/
COPY deploy/virtual-board-tcp /usr/local/bin/tinyfed-virtual-board-tcp
# A non-root user; in "dialout" (gid 20 on Debian and Ubuntu hosts) to open /dev/ttyACM*.
# /data is where the aggregator's database lives (a named volume, initialised from here).
RUN useradd --create-home --uid 1000 --user-group --groups dialout tinyfed \
 && mkdir /data \
 && chown tinyfed:tinyfed /data
USER tinyfed
WORKDIR /data
ENTRYPOINT ["tinyfed"]
CMD ["--help"]
