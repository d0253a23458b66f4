"""EtherNet/IP + CIP clients (cpppo from PyPI, cpppo.server.enip.client) for the scenario captures.

  poll   at --start-at connect (TCP, RegisterSession), then every --period s read Temp[0-3] and
         Setpoint[0-3] (Read Tag 0x4C in an Unconnected Send, one SendRRData each) until
         --duration s. cpppo's client waits for each reply (--timeout bounds the connection
         only), so a silent controller holds one read outstanding and the missed rounds follow
         in a burst when it answers again. A read that fails (closed session) drops the
         connection, and the next period connects again, as an HMI does. Optional one-off actions on the polling
         connection at T seconds after --start-at: --action T:reset (Identity object Reset,
         service 0x05 to class 1 instance 1).
  write  connect, Write Tag Setpoint[1] = 150 (INT, 0x4D), disconnect
"""
import argparse
import sys
import time

from cpppo.server.enip import client
from timing import log, sleep_until

READS = ["Temp[0-3]", "Setpoint[0-3]"]


def run(conn, ops):
    with conn:  # cpppo: one state machine at a time
        return list(conn.synchronous(operations=list(ops)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["poll", "write"])
    ap.add_argument("--server", default="10.77.0.2")
    ap.add_argument("--port", type=int, default=44818)
    ap.add_argument("--start-at", type=float, default=0.0)
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--period", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=0.5)
    ap.add_argument("--action", action="append")
    a = ap.parse_args()
    if a.start_at == 0.0:
        a.start_at = time.time()
    sleep_until(a.start_at)
    if a.cmd == "write":
        conn = client.connector(host=a.server, port=a.port, timeout=2.0)
        log("write", run(conn, client.parse_operations(["Setpoint[1]=(INT)150"]))[0][3:])
        time.sleep(0.1)
        conn.close()
        return
    actions = sorted(([a.start_at + float(s.split(":")[0]), s.split(":")[1]] for s in a.action or []),
                     key=lambda x: x[0])
    end = a.start_at + a.duration
    conn, k, failed = None, 0, 0
    while True:
        t = a.start_at + k * a.period
        if t >= end:
            break
        while actions and actions[0][0] <= t:
            at, kind = actions.pop(0)
            sleep_until(at)
            if kind != "reset":
                raise SystemExit(f"unknown action {kind}")
            try:
                if conn is None:
                    conn = client.connector(host=a.server, port=a.port, timeout=a.timeout)
                log("reset", run(conn, [{"method": "service_code", "code": 0x05, "path": "@1/1",
                                         "data_size": 0}]))
            except Exception as e:  # cpppo refuses it and closes the session
                log("reset refused:", repr(e))
                if conn is not None:
                    conn.close()
                conn = None
        sleep_until(t)
        try:
            if conn is None:
                conn = client.connector(host=a.server, port=a.port, timeout=a.timeout)
            run(conn, client.parse_operations(READS))
        except Exception as e:  # keep polling like an HMI would
            failed += 1
            log("read failed", repr(e))
            if conn is not None:
                conn.close()
            conn = None
        k += 1
    sleep_until(end)
    if conn is not None:
        conn.close()
    log(f"poll done: {k} rounds, {failed} failed")


if __name__ == "__main__":
    main()
