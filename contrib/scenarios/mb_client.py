#!/usr/bin/python3
"""Modbus/TCP clients for the otwatch scenario captures.

Requests and responses are encoded/decoded with pymodbus' own message classes and socket
framer; the socket handling is done here so that timing is exact (pymodbus 3.0.0rc1's client
truncates timeouts to whole seconds: int(timeout) in pymodbus/client/base.py).

Sub-commands (all take --server, --start-at EPOCH; times are absolute epoch seconds):
  poll     the master: FC3 holding 0..9 every --period s, FC1 coils 0..15 every 2nd period,
           one persistent TCP connection, timeouts do not close it; optional one-off
           actions on the same connection: --action T:write6:REG:VALUE, --action T:diag1
  write16  connect, FC16 write --count registers at --addr, disconnect
  flood    new connection, FC3 reads lock-step as fast as possible (capped by --rate) for --duration s
  scan     one connection, FC3 read of register 0 for unit ids --first..--last, --timeout each
  devid    connect, FC43/14 read device identification (basic, then regular), disconnect
"""
import argparse
import socket
import struct
import sys
import time

from pymodbus.bit_read_message import ReadCoilsRequest
from pymodbus.diag_message import RestartCommunicationsOptionRequest
from pymodbus.factory import ClientDecoder
from pymodbus.framer.socket_framer import ModbusSocketFramer
from pymodbus.mei_message import ReadDeviceInformationRequest
from pymodbus.register_read_message import ReadHoldingRegistersRequest
from pymodbus.register_write_message import (WriteMultipleRegistersRequest,
                                             WriteSingleRegisterRequest)
from timing import log, sleep_until


class Conn:
    def __init__(self, server, port=502, src=None):
        self.sock = socket.create_connection((server, port), timeout=5,
                                             source_address=(src, 0) if src else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.framer = ModbusSocketFramer(ClientDecoder())
        self.decoder = ClientDecoder()
        self.tid = 0
        self.buf = b""
        self.stale = 0

    def send(self, req, unit=1):
        self.tid = (self.tid + 1) & 0xFFFF
        req.transaction_id = self.tid
        req.unit_id = unit
        self.sock.sendall(self.framer.buildPacket(req))
        return self.tid

    def _read_frame(self, deadline):
        while True:
            if len(self.buf) >= 7:
                tid, _pid, length, _uid = struct.unpack(">HHHB", self.buf[:7])
                if len(self.buf) >= 6 + length:
                    pdu = self.buf[7:6 + length]
                    self.buf = self.buf[6 + length:]
                    return tid, pdu
            rem = deadline - time.time()
            if rem <= 0:
                return None
            self.sock.settimeout(rem)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                return None
            if not data:
                raise ConnectionError("server closed the connection")
            self.buf += data

    def request(self, req, unit=1, timeout=0.5):
        tid = self.send(req, unit)
        deadline = time.time() + timeout
        while True:
            fr = self._read_frame(deadline)
            if fr is None:
                return None
            rtid, pdu = fr
            if rtid != tid:
                self.stale += 1  # late answer to an earlier, timed-out request
                continue
            return self.decoder.decode(pdu)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def cmd_poll(a):
    actions = []
    for spec in a.action or []:
        parts = spec.split(":")
        actions.append([a.start_at + float(parts[0])] + parts[1:])
    actions.sort(key=lambda x: x[0])
    sleep_until(a.start_at)
    c = Conn(a.server, a.port, a.src)
    end = a.start_at + a.duration
    k = 0
    timeouts = 0
    while True:
        t = a.start_at + k * a.period
        if t >= end:
            break
        # one-off actions due before this tick
        while actions and actions[0][0] <= t:
            at, kind, *rest = actions.pop(0)
            sleep_until(at)
            if kind == "write6":
                r = c.request(WriteSingleRegisterRequest(int(rest[0]), int(rest[1])), a.unit, a.timeout)
                log("write6", rest, r)
            elif kind == "diag1":
                r = c.request(RestartCommunicationsOptionRequest(toggle=False), a.unit, a.timeout)
                log("diag1", r)
            else:
                raise SystemExit(f"unknown action {kind}")
        sleep_until(t)
        r = c.request(ReadHoldingRegistersRequest(0, 10), a.unit, a.timeout)
        if r is None:
            timeouts += 1
            log("fc3 timeout")
        if k % 2 == 0:
            r = c.request(ReadCoilsRequest(0, 16), a.unit, a.timeout)
            if r is None:
                timeouts += 1
                log("fc1 timeout")
        k += 1
    sleep_until(end)
    log(f"poll done: cycles={k} timeouts={timeouts} stale_responses={c.stale}")
    c.close()


def cmd_write16(a):
    sleep_until(a.start_at)
    c = Conn(a.server, a.port, a.src)
    values = [int(v) for v in a.values.split(",")]
    r = c.request(WriteMultipleRegistersRequest(a.addr, values), a.unit, a.timeout)
    log("write16", a.addr, values, r)
    time.sleep(0.05)
    c.close()


def cmd_flood(a):
    sleep_until(a.start_at)
    c = Conn(a.server, a.port, a.src)
    end = time.time() + a.duration
    n = 0
    gap = 1.0 / a.rate if a.rate > 0 else 0
    nxt = time.time()
    while time.time() < end:
        c.request(ReadHoldingRegistersRequest(0, 10), a.unit, a.timeout)
        n += 1
        nxt += gap
        d = nxt - time.time()
        if d > 0:
            time.sleep(d)
    log(f"flood done: {n} requests")
    c.close()


def cmd_scan(a):
    sleep_until(a.start_at)
    c = Conn(a.server, a.port, a.src)
    found = []
    for unit in range(a.first, a.last + 1):
        r = c.request(ReadHoldingRegistersRequest(0, 1), unit, a.timeout)
        if r is not None:
            found.append(unit)
    log("scan found units", found)
    c.close()


def cmd_devid(a):
    sleep_until(a.start_at)
    c = Conn(a.server, a.port, a.src)
    for code in (1, 2):
        r = c.request(ReadDeviceInformationRequest(read_code=code, object_id=0), a.unit, a.timeout)
        log("devid", code, getattr(r, "information", r))
        time.sleep(0.1)
    c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["poll", "write16", "flood", "scan", "devid"])
    ap.add_argument("--server", default="10.77.0.2")
    ap.add_argument("--port", type=int, default=502)
    ap.add_argument("--src", default=None, help="source address to bind")
    ap.add_argument("--unit", type=int, default=1)
    ap.add_argument("--start-at", type=float, default=0.0)
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--period", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=0.5)
    ap.add_argument("--action", action="append")
    ap.add_argument("--addr", type=int, default=100)
    ap.add_argument("--values", default="1,2,3,4,5")
    ap.add_argument("--rate", type=float, default=400.0)
    ap.add_argument("--first", type=int, default=1)
    ap.add_argument("--last", type=int, default=50)
    a = ap.parse_args()
    if a.start_at == 0.0:
        a.start_at = time.time()
    globals()["cmd_" + a.cmd](a)


if __name__ == "__main__":
    main()
