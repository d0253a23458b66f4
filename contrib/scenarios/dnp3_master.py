#!/usr/bin/python3
"""DNP3 master (opendnp3, PyPI yadnp3) for the otwatch scenario captures.

  prime  connect to the outstation, let opendnp3's master clear the outstation's IIN1.7
         DEVICE_RESTART (WRITE g80v1 index 7), then disconnect. make_scenarios.py runs this
         before dumpcap starts, so that the captured session begins on an outstation that has
         been up for a while (a new opendnp3 outstation reports IIN1.7 until a master clears it).
  poll   from --start-at for --duration s: one TCP connection, link address 1 -> 10; opendnp3's
         session start-up (DISABLE_UNSOLICITED, integrity poll of class 0123,
         ENABLE_UNSOLICITED), then a class 0 integrity poll every 2 s and a class 1/2/3 event poll
         every 1 s; application confirms when a response asks for one. One-off actions at
         T seconds after --start-at, on the same session:
           --action T:cold_restart   COLD_RESTART (function 13)
           --action T:operate        DIRECT_OPERATE (function 5) of a CROB (g12v1) LATCH_ON on
                                     index 0
"""
import argparse
import sys
import threading
import time

import opendnp3 as o
from timing import sleep_until


def log(*a):
    print(f"{time.time():.6f} dnp3_master", *a, file=sys.stderr, flush=True)


class SOE(o.ISOEHandler):
    def BeginFragment(self, info):
        pass

    def EndFragment(self, info):
        pass

    def Process(self, info, values):
        pass


class MasterApp(o.IMasterApplication):
    def __init__(self):
        super().__init__()
        self.restart_iin = None
        self.iin_seen = threading.Event()
        self.opened = threading.Event()

    def OnReceiveIIN(self, iin):
        rst = iin.IsSet(o.IINBit.DEVICE_RESTART)
        if rst != self.restart_iin:
            log("IIN1.7 DEVICE_RESTART", "set" if rst else "clear")
        self.restart_iin = rst
        self.iin_seen.set()

    def OnTaskStart(self, type, id):
        pass

    def OnTaskComplete(self, info):
        if info.type != o.MasterTaskType.USER_TASK or info.result != o.TaskCompletion.SUCCESS:
            log("task", info.type, info.result)

    def OnOpen(self):
        log("channel open")
        self.opened.set()

    def OnClose(self):
        log("channel closed")

    def AssignClassDuringStartup(self):
        return False

    def Now(self):
        return o.UTCTimestamp(int(time.time() * 1000))


def build(a, app, soe):
    mgr = o.DNP3Manager(1)
    ch = mgr.AddTCPClient("client", o.levels.NOTHING,
                          o.ChannelRetry(o.TimeDuration.Seconds(1), o.TimeDuration.Seconds(1)),
                          [o.IPEndpoint(a.server, a.port)], "0.0.0.0", None)
    cfg = o.MasterStackConfig()
    cfg.link.LocalAddr = a.local_addr
    cfg.link.RemoteAddr = a.remote_addr
    master = ch.AddMaster("master", soe, app, cfg)
    return mgr, master


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["prime", "poll"])
    ap.add_argument("--server", default="10.77.0.2")
    ap.add_argument("--port", type=int, default=20000)
    ap.add_argument("--local-addr", type=int, default=1)
    ap.add_argument("--remote-addr", type=int, default=10)
    ap.add_argument("--start-at", type=float, default=0.0)
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--integrity-period", type=float, default=2.0)
    ap.add_argument("--event-period", type=float, default=1.0)
    ap.add_argument("--action", action="append")
    a = ap.parse_args()
    app, soe = MasterApp(), SOE()

    if a.cmd == "prime":
        mgr, master = build(a, app, soe)
        master.Enable()
        deadline = time.time() + 20
        while time.time() < deadline:
            if app.restart_iin is False:
                break
            time.sleep(0.1)
        time.sleep(0.3)
        master.Disable()
        mgr.Shutdown()
        if app.restart_iin is not False:
            raise SystemExit("prime: the outstation's IIN1.7 was not cleared")
        log("prime done: IIN1.7 clear")
        return

    if a.start_at == 0.0:
        a.start_at = time.time()
    actions = sorted(((a.start_at + float(s.split(":")[0]), s.split(":")[1]) for s in a.action or []))
    sleep_until(a.start_at)
    mgr, master = build(a, app, soe)
    ms = lambda s: o.TimeDuration.Milliseconds(int(round(s * 1000)))
    master.AddClassScan(o.ClassField(True, False, False, False), ms(a.integrity_period), soe)
    master.AddClassScan(o.ClassField.AllEventClasses(), ms(a.event_period), soe)
    master.Enable()
    done = threading.Event()
    results = []

    def on_restart(r):
        results.append(("cold_restart", r.summary, r.restartTime))
        done.set()

    def on_command(r):
        results.append(("operate", r.summary, [(p.index, p.state, p.status) for p in r.to_list()]))
        done.set()

    for at, kind in actions:
        sleep_until(at)
        done.clear()
        if kind == "cold_restart":
            log("COLD_RESTART ->")
            master.Restart(o.RestartType.COLD, on_restart)
        elif kind == "operate":
            log("DIRECT_OPERATE CROB LATCH_ON index 0 ->")
            master.DirectOperate(o.ControlRelayOutputBlock(o.OperationType.LATCH_ON), 0, on_command)
        else:
            raise SystemExit(f"unknown action {kind}")
        done.wait(10)
        log("result", results[-1] if results else None)
    sleep_until(a.start_at + a.duration)
    master.Disable()
    mgr.Shutdown()
    log("poll done")


if __name__ == "__main__":
    main()
