"""IEC 60870-5-104 controlling station (master) for the scenario captures: c104 (PyPI) client.

poll: connect to 10.77.0.2:2404 (STARTDT, general interrogation and clock synchronisation at
      connection, c104's Init.ALL, before the capture's T0), then from T0 a station
      interrogation (C_IC_NA_1, QOI 20) every 10 s until T0 + duration.
command: connect with STARTDT only (Init.NONE) at --start-at, send one single command
      C_SC_NA_1 (on, execute) to IOA 20 of common address 1, then disconnect.
"""
import argparse
import sys
import time

import c104

SERVER = "10.77.0.2"


def wait_until(t):
    while time.time() < t:
        time.sleep(min(0.05, max(0.0, t - time.time())))


def connect(init):
    cl = c104.Client(tick_rate_ms=100, command_timeout_ms=2000)
    conn = cl.add_connection(ip=SERVER, port=2404, init=init)
    st = conn.add_station(common_address=1)
    cl.start()
    # Open: connected and started (STARTDT confirmed), so that nothing is sent on a muted link.
    deadline = time.time() + 10
    while conn.state != c104.ConnectionState.OPEN and time.time() < deadline:
        if conn.state == c104.ConnectionState.OPEN_MUTED and init != c104.Init.MUTED:
            # c104 sometimes connects without starting data transfer: ask for it (STARTDT act).
            conn.unmute()
        time.sleep(0.2)
    if conn.state != c104.ConnectionState.OPEN:
        sys.exit(f"no open connection: {conn.state}")
    return cl, conn, st


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["poll", "command"])
    ap.add_argument("--start-at", type=float, required=True)
    ap.add_argument("--duration", type=float, default=0)
    a = ap.parse_args()
    if a.mode == "poll":
        cl, conn, st = connect(c104.Init.ALL)
        wait_until(a.start_at)
        k = 0
        while True:
            t = a.start_at + 10 * k
            if t >= a.start_at + a.duration:
                break
            wait_until(t)
            conn.interrogation(common_address=1, cause=c104.Cot.ACTIVATION, qualifier=c104.Qoi.STATION,
                               wait_for_response=False)
            k += 1
        wait_until(a.start_at + a.duration)
        cl.stop()
    else:
        wait_until(a.start_at - 0.5)
        cl, conn, st = connect(c104.Init.NONE)
        point = st.add_point(io_address=20, type=c104.Type.C_SC_NA_1)
        wait_until(a.start_at)
        point.value = True
        ok = point.transmit(cause=c104.Cot.ACTIVATION)
        print(f"{time.time():.6f} command accepted: {ok}", flush=True)
        time.sleep(1.0)
        cl.stop()


if __name__ == "__main__":
    main()
