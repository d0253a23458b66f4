#!/usr/bin/python3
"""S7comm clients (python-snap7 snap7.client.Client) for the otwatch scenario captures.

  poll   connect (COTP CR, setup communication), db_read(DB1, 0, 32) every --period s for
         --duration s; optional one-off actions on the same connection at T seconds after
         --start-at: --action T:stop (plc_stop), --action T:hotstart (plc_hot_start)
  write  connect, db_write(DB1, 4, 4 bytes), disconnect
"""
import argparse
import sys
import time

import snap7
from timing import log, sleep_until


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["poll", "write"])
    ap.add_argument("--server", default="10.77.0.2")
    ap.add_argument("--port", type=int, default=102)
    ap.add_argument("--start-at", type=float, default=0.0)
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--period", type=float, default=1.0)
    ap.add_argument("--action", action="append")
    a = ap.parse_args()
    if a.start_at == 0.0:
        a.start_at = time.time()
    sleep_until(a.start_at)
    c = snap7.client.Client()
    c.connect(a.server, 0, 1, a.port)
    if a.cmd == "write":
        c.db_write(1, 4, bytearray(b"\x7f\xff\x00\x00"))
        log("db_write done")
        time.sleep(0.1)
        c.disconnect()
        return
    actions = sorted(([a.start_at + float(s.split(":")[0]), s.split(":")[1]] for s in a.action or []),
                     key=lambda x: x[0])
    end = a.start_at + a.duration
    k = 0
    while True:
        t = a.start_at + k * a.period
        if t >= end:
            break
        while actions and actions[0][0] <= t:
            at, kind = actions.pop(0)
            sleep_until(at)
            if kind == "stop":
                log("plc_stop", c.plc_stop())
            elif kind == "hotstart":
                log("plc_hot_start", c.plc_hot_start())
            else:
                raise SystemExit(f"unknown action {kind}")
        sleep_until(t)
        try:
            c.db_read(1, 0, 32)
        except Exception as e:  # keep polling like an HMI would
            log("db_read failed", e)
        k += 1
    sleep_until(end)
    c.disconnect()
    log(f"poll done: {k} reads")


if __name__ == "__main__":
    main()
