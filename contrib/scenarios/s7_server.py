#!/usr/bin/python3
"""S7comm server (python-snap7's pure-Python snap7.server.Server) for the otwatch scenarios.

DB1 (64 bytes): ten big-endian INTs at offsets 0..18 follow stationary signals inside 100..200
(refreshed once a second, as the Modbus server's holding registers 0..9); the rest is static. MK/PA/PE areas exist. CPU starts in RUN; plc_stop/plc_hot_start
from a client change the emulated CPU state.
"""
import argparse
import logging
import math
import random
import signal
import struct
import threading
import time

from snap7 import __version__ as snap7_version
from snap7.server import Server
from snap7.type import SrvArea


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=102)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s s7_server %(message)s")
    logging.getLogger("snap7").setLevel(logging.INFO)
    logging.info("python-snap7 %s", snap7_version)

    db1 = bytearray(64)
    db1[20:32] = b"otwatch-lab\x00"
    srv = Server(log=True)
    srv.register_area(SrvArea.DB, 1, db1)
    srv.register_area(SrvArea.MK, 0, bytearray(64))
    srv.register_area(SrvArea.PA, 0, bytearray(16))
    srv.register_area(SrvArea.PE, 0, bytearray(16))
    srv.start(tcp_port=args.port)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    rng = random.Random(args.seed)
    tick = 0
    while not stop.is_set():
        vals = []
        for i in range(10):  # same stationary bands as mb_server.process_value
            centre, amp, period = 120 + 6 * i, 8 + 3 * (i % 4), 12 + 2 * i
            v = centre + round(amp * math.sin(2 * math.pi * tick / period)) + rng.randint(-1, 1)
            vals.append(min(centre + amp, max(centre - amp, v)))
        struct.pack_into(">10h", db1, 0, *vals)
        tick += 1
        stop.wait(1.0)
    srv.stop()


if __name__ == "__main__":
    main()
