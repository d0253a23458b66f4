#!/usr/bin/python3
"""DNP3 outstation (opendnp3, PyPI yadnp3) for the otwatch scenario captures.

TCP server on --port (20000), link address 10, answers master link address 1 only.
Database: 6 binary inputs (g1v2 static, g2v1 events) and 6 analog inputs (g30v1 static,
g32v1 events), all in event class 1 with deadband 0 (opendnp3's DatabaseConfig(n) defaults;
the bindings cannot configure single points). No other point types. Unsolicited responses are
not allowed (the master's ENABLE/DISABLE_UNSOLICITED get IIN2.0 "function not supported").

Process logic (once a second): analog i follows a stationary signal, centre 1000+100i,
amplitude 20+5(i mod 3), period 12+2i s, plus +/-1 seeded noise, clamped to its band; binary
inputs hold a fixed pattern and one of them toggles every 10 s.

Commands: CROBs and analog outputs are accepted (SUCCESS) and only logged.
COLD_RESTART (function 13) is supported (coarse delay, g52v1): the outstation answers, then
really restarts: about 0.5 s after the answer the whole DNP3 stack (manager, TCP listener,
outstation) is shut down, and --restart-time s later a new one is built. A new opendnp3
outstation sets IIN1.7 DEVICE_RESTART by itself until a master clears it (WRITE g80v1 index 7);
nothing here sets or clears that bit.
"""
import argparse
import math
import random
import signal
import sys
import threading
import time

import opendnp3 as o

N_POINTS = 6
ONLINE = o.Flags(0x01)


def log(*a):
    print(f"{time.time():.6f} dnp3_outstation", *a, file=sys.stderr, flush=True)


def analog_value(i, tick, rng):
    centre, amp, period = 1000 + 100 * i, 20 + 5 * (i % 3), 12 + 2 * i
    v = centre + round(amp * math.sin(2 * math.pi * tick / period)) + rng.randint(-1, 1)
    return min(centre + amp, max(centre - amp, v))


class Process:
    """The outstation's process image; survives a stack restart (the field does not reboot)."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.tick = 0
        self.analogs = [float(analog_value(i, 0, self.rng)) for i in range(N_POINTS)]
        self.binaries = [i % 2 == 0 for i in range(N_POINTS)]
        self.lock = threading.Lock()

    def step(self):
        with self.lock:
            self.tick += 1
            self.analogs = [float(analog_value(i, self.tick, self.rng)) for i in range(N_POINTS)]
            if self.tick % 10 == 0:
                self.binaries[2] = not self.binaries[2]

    def updates(self):
        with self.lock:
            b = o.UpdateBuilder()
            for i, v in enumerate(self.binaries):
                b.Update(o.Binary(v, ONLINE), i)
            for i, v in enumerate(self.analogs):
                b.Update(o.Analog(v, ONLINE), i)
            return b.Build()


class Commands(o.ICommandHandler):
    def Begin(self):
        pass

    def End(self):
        pass

    def Select(self, command, index):
        log("select", type(command).__name__, index)
        return o.CommandStatus.SUCCESS

    def Operate(self, command, index, handler, op_type):
        log("operate", type(command).__name__, index, op_type)
        return o.CommandStatus.SUCCESS


class App(o.IOutstationApplication):
    def __init__(self, on_cold_restart, restart_time):
        super().__init__()
        self.on_cold_restart = on_cold_restart
        self.restart_time = restart_time

    def SupportsWriteAbsoluteTime(self):
        return False

    def WriteAbsoluteTime(self, timestamp):
        return False

    def SupportsAssignClass(self):
        return False

    def GetApplicationIIN(self):
        return o.ApplicationIIN()

    def ColdRestartSupport(self):
        return o.RestartMode.SUPPORTED_DELAY_COARSE

    def WarmRestartSupport(self):
        return o.RestartMode.UNSUPPORTED

    def ColdRestart(self):
        log("COLD_RESTART requested")
        self.on_cold_restart()
        return int(math.ceil(self.restart_time))  # seconds, reported in g52v1

    def WarmRestart(self):
        return 0

    def Now(self):
        return o.DNPTime(int(time.time() * 1000))


class Stack:
    def __init__(self, args, process):
        self.args = args
        self.process = process
        self.manager = None
        self.outstation = None
        self.lock = threading.Lock()
        self.restarting = False

    def start(self):
        a = self.args
        mgr = o.DNP3Manager(1)
        ch = mgr.AddTCPServer("server", o.levels.NOTHING, o.ServerAcceptMode.CloseExisting,
                              o.IPEndpoint(a.bind, a.port), None)
        db = o.DatabaseConfig(N_POINTS)
        for kind in ("double_binary", "counter", "frozen_counter", "binary_output_status",
                     "analog_output_status", "time_and_interval", "octet_string"):
            setattr(db, kind, {})
        cfg = o.OutstationStackConfig(db)
        cfg.outstation.eventBufferConfig = o.EventBufferConfig.AllTypes(200)
        cfg.outstation.params.allowUnsolicited = False
        cfg.link.LocalAddr = a.local_addr
        cfg.link.RemoteAddr = a.remote_addr
        self.commands = Commands()
        self.app = App(self.schedule_restart, a.restart_time)
        outst = ch.AddOutstation("outstation", self.commands, self.app, cfg)
        outst.Apply(self.process.updates())  # process values before the first poll
        outst.Enable()
        with self.lock:
            self.manager, self.outstation = mgr, outst
        log(f"stack up on {a.bind}:{a.port}, link {a.local_addr} <- master {a.remote_addr}")

    def stop(self):
        with self.lock:
            mgr, self.manager, self.outstation = self.manager, None, None
        if mgr is not None:
            mgr.Shutdown()

    def apply(self):
        with self.lock:
            if self.outstation is not None:
                self.outstation.Apply(self.process.updates())

    def schedule_restart(self):
        # Called on the stack's thread while it builds the answer: restart from another thread
        # once the answer is out.
        if self.restarting:
            return
        self.restarting = True
        threading.Thread(target=self._restart, daemon=True).start()

    def _restart(self):
        time.sleep(0.5)
        log("cold restart: stack down")
        self.stop()
        time.sleep(max(0.0, self.args.restart_time - 0.5))
        self.start()
        log("cold restart: stack up again")
        self.restarting = False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=20000)
    ap.add_argument("--local-addr", type=int, default=10)
    ap.add_argument("--remote-addr", type=int, default=1)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--restart-time", type=float, default=3.0,
                    help="seconds the outstation is down after a cold restart")
    a = ap.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    process = Process(a.seed)
    stack = Stack(a, process)
    stack.start()
    # ticks on whole wall-clock seconds; make_scenarios.py starts the master's polls half a
    # second off them, so every 1-s event poll finds exactly one process update
    next_tick = math.floor(time.time()) + 1.0
    while not stop.is_set():
        stop.wait(max(0.0, next_tick - time.time()))
        if stop.is_set():
            break
        process.step()
        stack.apply()
        next_tick += 1.0
    stack.stop()
    log("stopped")


if __name__ == "__main__":
    main()
