#!/usr/bin/python3
"""Modbus/TCP server (pymodbus) for the otwatch scenario captures.

Unit 1 only (other unit ids are ignored by pymodbus, as a single-device server does).
Holding registers 0..9 follow stationary signals inside 100..200 (see process_value; refreshed
once a second, a client's write to them is overwritten at the next refresh),
registers 10..199 exist (zero), coils 0..15 hold a fixed pattern with one coil toggling
every 10 s. FC43/14 answers with a basic device identification.

Signals (sent by make_scenarios.py):
  SIGUSR1  toggle the value anomaly: holding register 3 is forced to 65000
  SIGUSR2  toggle a 200 ms delay on every response (applied in the server, as netem is
           not available on the capture host; the delay is real wall time on the wire)
  SIGSTOP / SIGCONT (by the kernel) make the server silent: the kernel still ACKs, the
           application never answers until continued.
"""
import argparse
import asyncio
import logging
import math
import random
import signal

from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext)
from pymodbus.device import ModbusDeviceIdentification
from pymodbus.server.async_io import ModbusConnectedRequestHandler, ModbusTcpServer
from pymodbus.version import version as pymodbus_version

STATE = {"delay": 0.0, "value_anomaly": False}
log = logging.getLogger("mb_server")


class DelayingHandler(ModbusConnectedRequestHandler):
    """Connected handler whose responses can be held back by STATE['delay'] seconds."""

    def _send_(self, data):
        delay = STATE["delay"]
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._late_write, data)
        else:
            self.transport.write(data)

    def _late_write(self, data):
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


def process_value(i, tick, rng):
    """Register i at second `tick`: a stationary signal in a fixed band (no drift), so that the
    first 60 s of polling already show a register's whole range.
    Band of register i: 120+6i +/- (8+3*(i%4)), i.e. inside 100..200; period 12+2i s."""
    centre, amp, period = 120 + 6 * i, 8 + 3 * (i % 4), 12 + 2 * i
    v = centre + round(amp * math.sin(2 * math.pi * tick / period)) + rng.randint(-1, 1)
    return min(centre + amp, max(centre - amp, v))


async def process(slave, seed):
    """The PLC logic: refreshes holding registers 0..9 once a second (overwriting whatever a
    client wrote there, as a PLC does with its process image) and toggles one coil every 10 s."""
    rng = random.Random(seed)
    coils = [bool(i % 3 == 0) for i in range(16)]
    tick = 0
    while True:
        out = [process_value(i, tick, rng) for i in range(10)]
        if STATE["value_anomaly"]:
            out[3] = 65000
        slave.setValues(3, 0, out)
        if tick % 10 == 9:
            j = rng.randrange(16)
            coils[j] = not coils[j]
            slave.setValues(1, 0, coils)
        tick += 1
        await asyncio.sleep(1.0)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=502)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--delay", type=float, default=0.2, help="delay applied on SIGUSR2")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s mb_server %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # rc1 logs every disconnect as ERROR

    slave = ModbusSlaveContext(
        di=ModbusSequentialDataBlock(0, [0] * 200),
        co=ModbusSequentialDataBlock(0, [False] * 200),
        hr=ModbusSequentialDataBlock(0, [0] * 200),
        ir=ModbusSequentialDataBlock(0, [0] * 200),
        zero_mode=True,
    )
    slave.setValues(1, 0, [bool(i % 3 == 0) for i in range(16)])
    context = ModbusServerContext(slaves={1: slave}, single=False)
    identity = ModbusDeviceIdentification(info_name={
        "VendorName": "otwatch-lab",
        "ProductCode": "OTW-SIM-1",
        "MajorMinorRevision": pymodbus_version.short(),
        "VendorUrl": "https://example.invalid/otwatch",
        "ProductName": "otwatch scenario Modbus server",
        "ModelName": "pymodbus",
    })
    server = ModbusTcpServer(context, identity=identity, address=(args.bind, args.port),
                             handler=DelayingHandler, allow_reuse_address=True)
    loop = asyncio.get_running_loop()

    def toggle_values():
        STATE["value_anomaly"] = not STATE["value_anomaly"]
        log.warning("value anomaly %s", STATE["value_anomaly"])

    def toggle_delay():
        STATE["delay"] = 0.0 if STATE["delay"] else args.delay
        log.warning("response delay %.3f s", STATE["delay"])

    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, toggle_values)
    loop.add_signal_handler(signal.SIGUSR2, toggle_delay)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    proc = asyncio.create_task(process(slave, args.seed))
    srv = asyncio.create_task(server.serve_forever())
    await stop.wait()
    proc.cancel()
    await server.shutdown()
    srv.cancel()


if __name__ == "__main__":
    asyncio.run(main())
