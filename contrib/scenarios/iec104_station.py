"""IEC 60870-5-104 controlled station (RTU) for the scenario captures: c104 (PyPI) server on
TCP 2404, common address 1.

Points: four short-float measurands M_ME_NC_1 at IOA 100..103, reported periodically every 2 s
(cause 1) and in answer to interrogations, each a stationary sine around 20 + i (amplitude
0.5 + 0.1 i, period 12 + 2 i s, seeded noise of +-0.05); a single point M_SP_NA_1 at IOA 10
that a single command C_SC_NA_1 at IOA 20 sets.

SIGSTOP/SIGCONT from the generator freeze and resume it (a silent device).
"""
import math
import random
import signal
import time

import c104

T0 = time.time()
rng = random.Random(104)


def value(i):
    t = time.time() - T0
    return 20.0 + i + (0.5 + 0.1 * i) * math.sin(2 * math.pi * t / (12 + 2 * i)) + rng.uniform(-0.05, 0.05)


def refresher(i):
    """c104 checks a callback's signature, annotations included."""

    def refresh(point: c104.Point) -> None:
        point.value = value(i)

    return refresh


def main():
    srv = c104.Server(ip="0.0.0.0", port=2404, tick_rate_ms=100)
    st = srv.add_station(common_address=1)
    points = []
    for i in range(4):
        p = st.add_point(io_address=100 + i, type=c104.Type.M_ME_NC_1, report_ms=2000)
        refresh = refresher(i)
        p.on_before_auto_transmit(callable=refresh)
        p.on_before_read(callable=refresh)
        p.value = value(i)
        points.append(p)
    state = st.add_point(io_address=10, type=c104.Type.M_SP_NA_1)
    state.value = False
    cmd = st.add_point(io_address=20, type=c104.Type.C_SC_NA_1, related_io_address=10)

    def on_command(point: c104.Point, previous_info: c104.Information,
                   message: c104.IncomingMessage) -> c104.ResponseState:
        state.value = bool(point.value)
        state.transmit(cause=c104.Cot.RETURN_INFO_REMOTE)
        return c104.ResponseState.SUCCESS

    cmd.on_receive(callable=on_command)
    srv.start()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop:
        time.sleep(0.2)
    srv.stop()


if __name__ == "__main__":
    main()
