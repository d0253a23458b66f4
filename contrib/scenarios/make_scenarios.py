#!/usr/bin/python3
"""Regenerate the labelled scenario captures in fixtures/scenarios/ (run as root).

Topology per scenario (all in network namespaces created here and removed afterwards):

    otws-<tag>-m  10.77.0.1  02:77:00:00:00:01  master / HMI
    otws-<tag>-s  10.77.0.2  02:77:00:00:00:02  server (pymodbus, python-snap7 or opendnp3)
    otws-<tag>-x  10.77.0.3  02:77:00:00:00:03  newcomer / attacker
    otws-<tag>-sw  bridge br0 joining the three; dumpcap listens on port p-s (the server's
                   switch port, i.e. a SPAN of the PLC port) and writes classic pcap.

Usage: make_scenarios.py [--only NAME ...] [--jobs N] [--no-label]
Afterwards label_scenarios.py (run automatically) derives labels.json from the captures.

DNP3 scenarios (dnp3_*) differ in the start-up only: the outstation starts first, a short
master session clears its IIN1.7 DEVICE_RESTART before dumpcap starts (dnp3_master.py prime),
and T0 is put half a second off the outstation's whole-second process ticks.
"""
import argparse
import gzip
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from timing import sleep_until

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "fixtures", "scenarios")
PY = "/usr/bin/python3"  # Debian python: python3-pymodbus + python-snap7 + yadnp3 (opendnp3)
HOSTS = {"m": ("10.77.0.1", "02:77:00:00:00:01"),
         "s": ("10.77.0.2", "02:77:00:00:00:02"),
         "x": ("10.77.0.3", "02:77:00:00:00:03")}

MB = [PY, os.path.join(HERE, "mb_client.py")]
S7 = [PY, os.path.join(HERE, "s7_client.py")]
D3 = [PY, os.path.join(HERE, "dnp3_master.py")]
# IEC 104 and EtherNet/IP peers: c104 and cpppo from PyPI (pip install c104 cpppo), in the
# Python that has them.
PYPI = os.environ.get("OTWS_PYPI", shutil.which("python3") or "python3")
I4 = [PYPI, os.path.join(HERE, "iec104_master.py")]
EN = [PYPI, os.path.join(HERE, "enip_client.py")]

# Scenario = (server kind, duration of the master's polling, events).
# Events: (t seconds after T0, kind, args); kinds: "run" (host, argv) starts a client in that
# host's namespace with --start-at T0+t; "sig" (signal) signals the server at T0+t.
SCENARIOS = {
    "modbus_steady": ("modbus", 120, MB + ["poll"], []),
    "modbus_write": ("modbus", 120, MB + ["poll", "--action", "70.5:write6:5:150"], [
        (90.5, "run", ("x", MB + ["write16", "--addr", "100", "--values", "11,22,33,44,55"])),
    ]),
    "modbus_flood": ("modbus", 90, MB + ["poll"], [
        (62.5, "run", ("m", MB + ["flood", "--duration", "5", "--rate", "400"])),
    ]),
    "modbus_silent": ("modbus", 100, MB + ["poll"], [
        (62.3, "sig", signal.SIGSTOP),
        (82.3, "sig", signal.SIGCONT),
    ]),
    "modbus_slow": ("modbus", 110, MB + ["poll"], [
        (62.5, "sig", signal.SIGUSR2),
        (92.5, "sig", signal.SIGUSR2),
    ]),
    "modbus_values": ("modbus", 100, MB + ["poll"], [
        (62.5, "sig", signal.SIGUSR1),
        (72.5, "sig", signal.SIGUSR1),
    ]),
    "modbus_restart_scan": ("modbus", 100, MB + ["poll", "--action", "65.5:diag1"], [
        (75.5, "run", ("x", MB + ["scan", "--first", "1", "--last", "50", "--timeout", "0.15"])),
        (85.5, "run", ("x", MB + ["devid"])),
    ]),
    "s7_steady": ("s7", 120, S7 + ["poll"], []),
    "s7_stop": ("s7", 100, S7 + ["poll", "--action", "70.5:stop", "--action", "80.5:hotstart"], []),
    "s7_write": ("s7", 100, S7 + ["poll"], [
        (70.5, "run", ("x", S7 + ["write"])),
    ]),
    "dnp3_steady": ("dnp3", 120, D3 + ["poll"], []),
    "dnp3_restart": ("dnp3", 100, D3 + ["poll", "--action", "70.3:cold_restart"], []),
    "dnp3_operate": ("dnp3", 100, D3 + ["poll", "--action", "70.3:operate"], []),
    "iec104_steady": ("iec104", 120, I4 + ["poll"], []),
    "iec104_command": ("iec104", 100, I4 + ["poll"], [
        (70.5, "run", ("x", I4 + ["command"])),
    ]),
    "iec104_silent": ("iec104", 100, I4 + ["poll"], [
        (62.3, "sig", signal.SIGSTOP),
        (82.3, "sig", signal.SIGCONT),
    ]),
    "enip_steady": ("enip", 120, EN + ["poll"], []),
    # An hour of each protocol's steady polling, for the clean-control evaluation (gzipped).
    "modbus_steady_hour": ("modbus", 3600, MB + ["poll"], []),
    "s7_steady_hour": ("s7", 3600, S7 + ["poll"], []),
    "dnp3_steady_hour": ("dnp3", 3600, D3 + ["poll"], []),
    "iec104_steady_hour": ("iec104", 3600, I4 + ["poll"], []),
    "enip_steady_hour": ("enip", 3600, EN + ["poll"], []),
    "enip_write": ("enip", 100, EN + ["poll"], [
        (70.5, "run", ("x", EN + ["write"])),
    ]),
    "enip_reset": ("enip", 100, EN + ["poll", "--action", "70.5:reset"], []),
    "enip_silent": ("enip", 100, EN + ["poll"], [
        (62.3, "sig", signal.SIGSTOP),
        (82.3, "sig", signal.SIGCONT),
    ]),
}
SERVERS = {"modbus": "mb_server.py", "s7": "s7_server.py", "dnp3": "dnp3_outstation.py"}


def sh(*argv, check=True):
    r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")
    return r


NO_TXCSUM = r"""
import ctypes, fcntl, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for ifname in sys.argv[1:]:
    # SIOCETHTOOL / ETHTOOL_STXCSUM(0): checksums are computed before the frame is captured
    ev = ctypes.create_string_buffer(struct.pack("II", 0x17, 0), 8)
    fcntl.ioctl(s.fileno(), 0x8946, struct.pack("16sP", ifname.encode(), ctypes.addressof(ev)))
"""


class Topo:
    def __init__(self, tag):
        self.tag = tag
        self.ns = {h: f"otws-{tag}-{h}" for h in ("sw", "m", "s", "x")}

    def up(self):
        self.down()
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
               "net.ipv6.conf.default.disable_ipv6=1")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sw = self.ns["sw"]
        sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge", "stp_state", "0",
           "forward_delay", "0", "mcast_snooping", "0")
        for h, (ip, mac) in HOSTS.items():
            ns = self.ns[h]
            sh("ip", "-n", sw, "link", "add", f"p-{h}", "type", "veth", "peer", "name", "eth0",
               "netns", ns)
            sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "netns", "exec", ns, PY, "-c", NO_TXCSUM, "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", sw, PY, "-c", NO_TXCSUM, f"p-{h}")
            sh("ip", "-n", sw, "link", "set", f"p-{h}", "master", "br0", "up")
        sh("ip", "-n", sw, "link", "set", "br0", "up")

    def down(self):
        for ns in self.ns.values():
            sh("ip", "netns", "del", ns, check=False)

    def popen(self, host, argv, **kw):
        return subprocess.Popen(["ip", "netns", "exec", self.ns[host]] + argv, **kw)


def stop_proc(p, sig=signal.SIGTERM, wait=5):
    if p is None or p.poll() is not None:
        return
    try:
        p.send_signal(signal.SIGCONT)
        p.send_signal(sig)
        p.wait(wait)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def run_scenario(name, tag, logdir):
    kind, duration, master, events = SCENARIOS[name]
    topo = Topo(tag)
    pcap = os.path.join(OUT, name + ".pcap")
    tmp = os.path.join(logdir, name + ".pcap")
    logf = open(os.path.join(logdir, name + ".log"), "w")
    procs, dump, server = [], None, None
    try:
        topo.up()
        if kind == "dnp3":
            # The outstation first; a short master session clears the IIN1.7 that a new opendnp3
            # outstation reports, before the capture starts (see dnp3_master.py prime).
            server = topo.popen("s", [PY, os.path.join(HERE, SERVERS[kind])], stdout=logf, stderr=logf)
            time.sleep(2.0)
            if server.poll() is not None:
                raise RuntimeError(f"{name}: server exited early")
            prime = topo.popen("m", D3 + ["prime"], stdout=logf, stderr=logf)
            if prime.wait(timeout=30) != 0:
                raise RuntimeError(f"{name}: priming the outstation failed")
            time.sleep(1.0)
        dump = topo.popen("sw", ["/usr/bin/dumpcap", "-i", "p-s", "-P", "-q", "-w", tmp],
                          stdout=logf, stderr=logf)
        time.sleep(2.0)
        if dump.poll() is not None:
            raise RuntimeError(f"{name}: dumpcap exited early")
        if kind == "modbus":
            server = topo.popen("s", [PY, os.path.join(HERE, "mb_server.py")], stdout=logf, stderr=logf)
        elif kind == "s7":
            server = topo.popen("s", [PY, os.path.join(HERE, "s7_server.py")], stdout=logf, stderr=logf)
        elif kind == "iec104":
            server = topo.popen("s", [PYPI, os.path.join(HERE, "iec104_station.py")], stdout=logf,
                                stderr=logf)
        elif kind == "enip":
            server = topo.popen("s", [PYPI, os.path.join(HERE, "enip_server.py")], stdout=logf,
                                stderr=logf)
        if kind != "dnp3":
            time.sleep(2.0)
        if kind in ("iec104", "enip"):
            # c104 loads a native library, cpppo many modules: give the server time to listen.
            time.sleep(2.0)
        if server.poll() is not None:
            raise RuntimeError(f"{name}: server exited early")
        t0 = time.time() + 1.0
        if kind == "dnp3":
            # half a second off the outstation's whole-second process ticks
            t0 = math.floor(time.time()) + 2.5
        print(f"[{name}] T0={t0:.6f}", file=logf, flush=True)
        procs.append(topo.popen("m", master + ["--start-at", f"{t0:.6f}", "--duration", str(duration)],
                                stdout=logf, stderr=logf))
        for t, ev, arg in sorted(events, key=lambda e: e[0]):
            if ev == "run":
                host, argv = arg
                sleep_until(t0 + t - 0.8)  # process start-up; the client itself waits for T0+t
                procs.append(topo.popen(host, argv + ["--start-at", f"{t0 + t:.6f}"],
                                        stdout=logf, stderr=logf))
            elif ev == "sig":
                sleep_until(t0 + t)
                server.send_signal(arg)
                print(f"{time.time():.6f} [{name}] server <- {signal.Signals(arg).name}", file=logf, flush=True)
        for p in procs:
            p.wait(timeout=duration + 60)
        bad = [p.args for p in procs if p.returncode != 0]
        if bad:
            raise RuntimeError(f"{name}: client failed: {bad}")
        time.sleep(1.0)
        stop_proc(server)
        time.sleep(0.5)
        stop_proc(dump, signal.SIGINT)
        if name.endswith("_hour"):
            # An hour of traffic is kept gzipped (otwatch and tshark read it as it is).
            with open(tmp, "rb") as src, gzip.open(pcap + ".gz", "wb", compresslevel=9) as dst:
                shutil.copyfileobj(src, dst)
            pcap += ".gz"
        else:
            shutil.copyfile(tmp, pcap)
        print(f"[{name}] done -> {pcap}", flush=True)
        return True
    except Exception as e:  # report and continue with the other scenarios
        print(f"[{name}] FAILED: {e}", flush=True)
        return False
    finally:
        for p in procs:
            stop_proc(p)
        stop_proc(server)
        stop_proc(dump, signal.SIGINT)
        topo.down()
        logf.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--no-label", action="store_true")
    ap.add_argument("--logdir", default="/tmp/otws-scenarios")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("must run as root (network namespaces, dumpcap)")
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(a.logdir, exist_ok=True)
    names = a.only or list(SCENARIOS)
    results = {}
    queue = list(enumerate(names))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                i, n = queue.pop(0)
            results[n] = run_scenario(n, f"{i:02d}", a.logdir)

    threads = [threading.Thread(target=worker) for _ in range(max(1, a.jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("results:", results)
    if not a.no_label:
        subprocess.run([PY, os.path.join(HERE, "label_scenarios.py")], check=False)
    sys.exit(0 if all(results.values()) else 1)


if __name__ == "__main__":
    main()
