#!/usr/bin/python3
"""Derive fixtures/scenarios/labels.json from the captures themselves (tshark 4.x).

Every time below is read from the pcap, not from the generator's schedule: episode start/end
are the first/last frame of the anomalous traffic as tshark sees it. Times are UTC (RFC 3339,
microseconds); *_s are seconds from the capture's first frame; frame numbers are 1-based
(tshark frame.number). Runs as any user; needs tshark and capinfos.
"""
import datetime as dt
import hashlib
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.abspath(os.path.join(HERE, "..", "..", "fixtures", "scenarios"))
MASTER, SERVER, NEWCOMER = "10.77.0.1", "10.77.0.2", "10.77.0.3"
PREFIX_S = 60.0  # every scenario's master polls cleanly for its first 60 s


def tshark(pcap, flt, fields):
    argv = ["tshark", "-r", pcap, "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,"]
    if flt:
        argv += ["-Y", flt]
    for f in fields:
        argv += ["-e", f]
    r = subprocess.run(argv, capture_output=True, text=True, check=True)
    return [line.split("\t") for line in r.stdout.splitlines() if line]


def rfc3339(epoch):
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Cap:
    def __init__(self, name):
        self.name = name
        # The hour-long captures are kept gzipped (tshark reads them as they are).
        self.path = os.path.join(OUT, name + ".pcap")
        if not os.path.exists(self.path):
            self.path += ".gz"
        rows = tshark(self.path, None, ["frame.number", "frame.time_epoch"])
        self.frames = len(rows)
        self.t0 = float(rows[0][1])
        self.t_end = float(rows[-1][1])

    def rel(self, epoch):
        return round(epoch - self.t0, 6)

    def window(self, flt):
        rows = tshark(self.path, flt, ["frame.number", "frame.time_epoch"])
        if not rows:
            raise SystemExit(f"{self.name}: no frames match {flt!r}")
        return (int(rows[0][0]), float(rows[0][1]), int(rows[-1][0]), float(rows[-1][1]), len(rows))

    def episode(self, etype, flt, src, dst, expected, acceptable, description, **extra):
        f0, t0, f1, t1, n = self.window(flt)
        return self.make_episode(etype, f0, t0, f1, t1, n, flt, src, dst, expected, acceptable,
                                 description, **extra)

    def make_episode(self, etype, f0, t0, f1, t1, n, flt, src, dst, expected, acceptable,
                     description, **extra):
        ep = {"type": etype, "start": rfc3339(t0), "end": rfc3339(t1),
              "start_s": self.rel(t0), "end_s": self.rel(t1),
              "first_frame": f0, "last_frame": f1, "frames": n,
              "src_ip": src, "dst_ip": dst,
              "expected_alerts": expected, "acceptable_alerts": acceptable,
              "description": description, "tshark_filter": flt}
        ep.update(extra)
        return ep

    def stream_of(self, flt):
        rows = tshark(self.path, flt, ["tcp.stream"])
        return int(rows[0][0])

    def newcomer_window(self, stream):
        """A newcomer's first TCP stream, starting at its ARP request when that came just before."""
        f0, t0, f1, t1, n = self.window(f"tcp.stream == {stream}")
        arp = tshark(self.path, f"arp && arp.src.proto_ipv4 == {NEWCOMER} && frame.number < {f0}",
                     ["frame.number", "frame.time_epoch"])
        if arp and t0 - float(arp[0][1]) < 2.0:
            fs = f0
            f0, t0 = int(arp[0][0]), float(arp[0][1])
            flt = (f"tcp.stream == {stream} || (arp && (arp.src.proto_ipv4 == {NEWCOMER} || "
                   f"arp.dst.proto_ipv4 == {NEWCOMER}) && frame.number >= {f0} && frame.number < {fs})")
        else:
            flt = f"tcp.stream == {stream}"
        n = len(tshark(self.path, flt, ["frame.number"]))
        return f0, t0, f1, t1, n, flt

    # Modbus request/response pairing on one TCP stream (by transaction id)
    def modbus_pairs(self, stream):
        rows = tshark(self.path, f"mbtcp && tcp.stream == {stream}",
                      ["frame.number", "frame.time_epoch", "tcp.srcport", "mbtcp.trans_id", "modbus.func_code"])
        reqs, resps = {}, {}
        for fn, t, sport, tids, _fcs in rows:
            for tid in tids.split(","):
                (resps if sport == "502" else reqs).setdefault(int(tid), (int(fn), float(t)))
        pairs = []
        for tid, (fn, t) in sorted(reqs.items(), key=lambda kv: kv[1][1]):
            r = resps.get(tid)
            pairs.append((tid, fn, t, r[0] if r else None, r[1] if r else None))
        return pairs

    def register_ranges(self):
        """Per-register [min, max] of holding registers 0..9 in the master's FC3 responses: in the
        clean prefix, and after it (the forced value 65000 of modbus_values left out)."""
        rows = tshark(self.path, f"modbus.func_code == 3 && tcp.srcport == 502 && ip.dst == {MASTER}",
                      ["frame.time_epoch", "modbus.regval_uint16"])
        pre, post = [], []
        for t, vals in rows:
            v = [int(x) for x in vals.split(",")]
            if len(v) != 10:  # several responses in one segment (backlog burst): skip
                continue
            (pre if float(t) < self.t0 + PREFIX_S else post).append(v)
        rng = lambda rs, i: [min(r[i] for r in rs if r[i] != 65000), max(r[i] for r in rs if r[i] != 65000)]
        out = {"prefix": [rng(pre, i) for i in range(10)], "after_prefix": [rng(post, i) for i in range(10)]}
        out["after_prefix_within_prefix_ranges"] = all(
            out["prefix"][i][0] <= out["after_prefix"][i][0] and out["after_prefix"][i][1] <= out["prefix"][i][1]
            for i in range(10))
        out["note"] = "excluding 65000 (modbus_values' forced register 3)"
        return out

    def summary(self):
        size = os.path.getsize(self.path)
        sha = hashlib.sha256(open(self.path, "rb").read()).hexdigest()
        d = {"file": os.path.basename(self.path), "bytes": size, "sha256": sha, "frames": self.frames,
             "link_type": "Ethernet (DLT_EN10MB), classic pcap, microsecond timestamps",
             "first_frame": rfc3339(self.t0), "last_frame": rfc3339(self.t_end),
             "duration_s": self.rel(self.t_end)}
        if self.name.startswith("modbus"):
            rows = tshark(self.path, "mbtcp", ["tcp.srcport", "mbtcp.trans_id", "modbus.func_code"])
            req = sum(len(r[1].split(",")) for r in rows if r[0] != "502")
            rsp = sum(len(r[1].split(",")) for r in rows if r[0] == "502")
            fcs = {}
            for r in rows:
                for fc in r[2].split(","):
                    fcs[fc] = fcs.get(fc, 0) + 1
            exc = len(tshark(self.path, "modbus.exception_code", ["frame.number"]))
            d["holding_0_9_ranges"] = self.register_ranges()
            d.update({"modbus_frames": len(rows), "modbus_pdus": req + rsp, "modbus_requests": req,
                      "modbus_responses": rsp, "modbus_exception_frames": exc,
                      "modbus_pdus_by_function_code": dict(sorted(fcs.items(), key=lambda kv: int(kv[0])))})
        elif self.name.startswith("dnp3"):
            d.update(self.dnp3_summary())
        elif self.name.startswith("iec104"):
            rows = tshark(self.path, "iec60870_104", ["iec60870_104.type", "iec60870_asdu.typeid"])
            formats, types = {}, {}
            for r in rows:
                for f in r[0].split(","):
                    formats[f] = formats.get(f, 0) + 1
                for t in filter(None, r[1].split(",")):
                    types[t] = types.get(t, 0) + 1
            d.update({"iec104_frames": len(rows), "iec104_apdus_by_format": formats,
                      "iec104_asdus_by_type_id": dict(sorted(types.items(), key=lambda kv: int(kv[0])))})
        elif self.name.startswith("enip"):
            rows = tshark(self.path, "enip", ["enip.command", "cip.sc"])
            commands, services = {}, {}
            for r in rows:
                for c in r[0].split(","):
                    commands[c] = commands.get(c, 0) + 1
                for sc in filter(None, r[1].split(",")):
                    services[sc] = services.get(sc, 0) + 1
            d.update({"enip_frames": len(rows), "enip_messages_by_command": commands,
                      "cip_messages_by_service": services})
        else:
            rows = tshark(self.path, "s7comm", ["s7comm.header.rosctr", "s7comm.param.func"])
            n = sum(len(r[0].split(",")) for r in rows)
            funcs = {}
            for r in rows:
                for f in r[1].split(","):
                    funcs[f] = funcs.get(f, 0) + 1
            d.update({"s7comm_frames": len(rows), "s7comm_pdus": n,
                      "s7comm_jobs": sum(r[0].split(",").count("1") for r in rows),
                      "s7comm_ack_data": sum(r[0].split(",").count("3") for r in rows),
                      "s7comm_pdus_by_function": funcs,
                      "cotp_frames": len(tshark(self.path, "cotp", ["frame.number"]))})
        pe = self.t0 + PREFIX_S
        last_clean = tshark(self.path, f"frame.time_epoch < {pe:.6f}", ["frame.number"])[-1][0]
        d["clean_prefix"] = {"end": rfc3339(pe), "end_s": PREFIX_S, "last_frame": int(last_clean)}
        if self.name.startswith("dnp3"):
            d["clean_prefix"]["dnp3_pdus_by_function"] = self.dnp3_functions(f"frame.time_epoch < {pe:.6f}")
            d["clean_prefix"]["dnp3_iin_device_restart_frames"] = len(
                tshark(self.path, f"dnp3.al.iin.rst == 1 && frame.time_epoch < {pe:.6f}", ["frame.number"]))
        return d

    # DNP3 (tshark 4.0 field names)
    def dnp3_functions(self, flt=None):
        rows = tshark(self.path, "dnp3.al.func" + (f" && {flt}" if flt else ""), ["dnp3.al.func"])
        fcs = {}
        for r in rows:
            for fc in r[0].split(","):
                fcs[fc] = fcs.get(fc, 0) + 1
        return dict(sorted(fcs.items(), key=lambda kv: int(kv[0])))

    def dnp3_summary(self):
        fcs = self.dnp3_functions()
        n = sum(fcs.values())
        rsp = fcs.get("129", 0) + fcs.get("130", 0) + fcs.get("131", 0)
        links = sorted({(int(r[0]), int(r[1])) for r in tshark(self.path, "dnp3 && dnp3.ctl.dir == 1",
                                                               ["dnp3.src", "dnp3.dst"])})
        return {"dnp3_frames": len(tshark(self.path, "dnp3", ["frame.number"])),
                "dnp3_pdus": n, "dnp3_requests": n - rsp, "dnp3_responses": fcs.get("129", 0),
                "dnp3_unsolicited": fcs.get("130", 0),
                "dnp3_pdus_by_function": fcs,
                "dnp3_link_addresses_master_to_outstation": [list(x) for x in links],
                "dnp3_iin_device_restart_frames": [int(r[0]) for r in tshark(self.path, "dnp3.al.iin.rst == 1", ["frame.number"])],
                "dnp3_iin_function_not_supported_responses": len(tshark(self.path, "dnp3.al.iin.fcni == 1", ["frame.number"])),
                "tcp_connections": len({r[0] for r in tshark(self.path, "tcp.flags.syn == 1 && tcp.flags.ack == 1", ["tcp.stream"])}),
                "analog_0_5_ranges": self.analog_ranges()}

    def analog_values(self):
        """(epoch, index, value) of every analog input the outstation reports: static g30v1 (all 6,
        in index order) and g32v1 events (2-octet index prefix)."""
        rows = tshark(self.path, "dnp3.al.func == 129 && (dnp3.al.obj == 0x1e01 || dnp3.al.obj == 0x2001)",
                      ["frame.time_epoch", "dnp3.al.obj", "dnp3.al.index", "dnp3.al.ana.int"])
        out = []
        for t, objs, idx, vals in rows:
            objs = objs.split(",")
            vals = [int(v) for v in vals.split(",")]
            idx = [int(i) for i in idx.split(",")] if idx else []
            n_static = 6 if "0x1e01" in objs else 0
            n_events = len(vals) - n_static
            ev_idx = idx[len(idx) - n_events:] if n_events else []
            # objects come in the order the outstation wrote them; g32 before g30 in these responses
            order = []
            for o in objs:
                if o == "0x2001":
                    order += ev_idx
                elif o == "0x1e01":
                    order += list(range(6))
            assert len(order) == len(vals), (self.name, t, objs, idx, vals)
            out += [(float(t), i, v) for i, v in zip(order, vals)]
        return out

    def analog_ranges(self):
        pre, post = {}, {}
        for t, i, v in self.analog_values():
            d = pre if t < self.t0 + PREFIX_S else post
            lo, hi = d.get(i, (v, v))
            d[i] = (min(lo, v), max(hi, v))
        out = {"prefix": [list(pre[i]) for i in range(6)], "after_prefix": [list(post[i]) for i in range(6)]}
        out["after_prefix_within_prefix_ranges"] = all(
            pre[i][0] <= post[i][0] and post[i][1] <= pre[i][1] for i in range(6))
        out["note"] = "g30v1 static values and g32v1 events of analog inputs 0..5 in the outstation's responses"
        return out


def fmt_lat(xs):
    return {"n": len(xs), "median_ms": round(statistics.median(xs) * 1000, 3),
            "max_ms": round(max(xs) * 1000, 3)} if xs else {"n": 0}


def modbus_steady(c):
    return [], "Baseline: master 10.77.0.1 polls unit 1 with FC3 (holding 0..9) every 1 s and FC1 (coils 0..15) every 2 s for 120 s. No anomaly; the whole capture is clean."


def modbus_write(c):
    eps = [c.episode("unauthorized_write", "modbus.func_code == 6", MASTER, SERVER,
                     ["unauthorized_write"], ["new_function_code", "behaviour_anomaly"],
                     "The polling master, which had only read (FC3/FC1), writes once: FC6 Write Single Register, register 5 = 150 (inside register 5's normal band; the server's process logic overwrites it at its next 1 s refresh), and gets the echo response.")]
    s = c.stream_of(f"ip.src == {NEWCOMER} && mbtcp")
    f0, t0, f1, t1, n, flt = c.newcomer_window(s)
    eps.append(c.make_episode("new_client_write", f0, t0, f1, t1, n, flt, NEWCOMER, SERVER,
                              ["new_asset", "new_channel", "unauthorized_write", "address_out_of_range"],
                              ["new_function_code", "behaviour_anomaly"],
                              "A host never seen before (10.77.0.3, MAC 02:77:00:00:00:03) ARPs for the server, opens a TCP connection, writes FC16 Write Multiple Registers to holding registers 100..104 (outside the polled 0..9) with 11,22,33,44,55, and closes."))
    return eps, "Clean polling, then the master writes once (FC6) and later a new client writes FC16 to a new address range."


def modbus_flood(c):
    ms = c.stream_of(f"ip.src == {MASTER} && mbtcp")
    flt = f"ip.addr == {MASTER} && tcp && tcp.stream != {ms}"
    f0, t0, f1, t1, n = c.window(flt)
    fs = c.stream_of(flt)
    pairs = c.modbus_pairs(fs)
    dur = pairs[-1][2] - pairs[0][2]
    ep = c.make_episode("traffic_flood", f0, t0, f1, t1, n, flt, MASTER, SERVER,
                        ["traffic_flood"], ["behaviour_anomaly", "poll_cycle_broken", "new_channel"],
                        f"From the master's address, a second TCP connection sends {len(pairs)} FC3 reads (holding 0..9) lock-step as fast as allowed (capped at 400/s) for {dur:.2f} s (~{len(pairs) / dur:.0f} req/s vs 1.5 req/s normally); {sum(1 for p in pairs if p[3])} are answered. The master's own polling on its first connection continues unchanged.",
                        requests=len(pairs), answered=sum(1 for p in pairs if p[3]))
    return [ep], "Clean polling, then a ~5 s FC3 request flood on a second connection from the master's host."


def modbus_silent(c):
    ms = c.stream_of(f"ip.src == {MASTER} && mbtcp")
    pairs = c.modbus_pairs(ms)
    late = [p for p in pairs if p[4] is None or p[4] - p[2] > 0.5]
    first = late[0]
    # the silence ends when the resumed server has answered its backlog: the last response to a
    # request sent before the server's first late answer
    answered = [p for p in late if p[3] is not None]
    if not answered:
        raise SystemExit(f"{c.name}: the server never answered again")
    resumed = min(p[4] for p in answered)
    backlog = [p for p in pairs if p[2] < resumed and p[2] >= first[2] and p[3] is not None]
    fe, te = max(p[3] for p in backlog), max(p[4] for p in backlog)
    flt = f"tcp.stream == {ms} && frame.number >= {first[1]} && frame.number <= {fe}"
    n = len(tshark(c.path, flt, ["frame.number"]))
    never = sum(1 for p in late if p[4] is None)
    ep = c.make_episode("device_silent", first[1], first[2], fe, te, n, flt, MASTER, SERVER,
                        ["device_silent", "response_timeout"],
                        ["poll_cycle_broken", "latency_shift", "behaviour_anomaly"],
                        f"The server process is frozen (SIGSTOP) for ~20 s: the kernel still ACKs, but {len(late)} master requests (FC3 every 1 s, FC1 every 2 s, 0.5 s client timeout, same connection) get no answer in time. The episode runs from the first unanswered request to the end of the burst in which the resumed server (SIGCONT) answers its whole backlog at once ({len(backlog)} responses in the burst, {never} requests never answered); normal polling follows.",
                        timed_out_requests=len(late), server_resumed_s=c.rel(resumed))
    return [ep], "Clean polling, then the server goes silent for ~20 s while the master keeps polling, then recovers."


def modbus_slow(c):
    ms = c.stream_of(f"ip.src == {MASTER} && mbtcp")
    pairs = [p for p in c.modbus_pairs(ms) if p[4] is not None]
    slow = [p for p in pairs if p[4] - p[2] > 0.1]
    f0, t0, f1, t1 = slow[0][1], slow[0][2], slow[-1][3], slow[-1][4]
    flt = f"tcp.stream == {ms} && frame.number >= {f0} && frame.number <= {f1}"
    n = len(tshark(c.path, flt, ["frame.number"]))
    before = [p[4] - p[2] for p in pairs if p[4] < t0]
    during = [p[4] - p[2] for p in slow]
    after = [p[4] - p[2] for p in pairs if p[2] > t1]
    ep = c.make_episode("latency_shift", f0, t0, f1, t1, n, flt, MASTER, SERVER,
                        ["latency_shift"], ["behaviour_anomaly", "poll_cycle_broken"],
                        f"The server holds every response back by 200 ms for ~30 s (delay added in the server, the only way here: the kernel has no netem). {len(slow)} responses are slow; requests keep their 1 s / 2 s period and nothing times out (client timeout 0.5 s).",
                        latency_before=fmt_lat(before), latency_during=fmt_lat(during),
                        latency_after=fmt_lat(after))
    return [ep], "Clean polling with sub-millisecond responses, then ~30 s of 200 ms response delay, then normal again."


def modbus_values(c):
    flt = "modbus.func_code == 3 && tcp.srcport == 502 && modbus.regval_uint16 == 65000"
    rows = tshark(c.path, flt, ["modbus.regnum16", "modbus.regval_uint16"])
    assert all(r[0].split(",")[r[1].split(",").index("65000")] == "3" for r in rows)
    normal = tshark(c.path, "modbus.func_code == 3 && tcp.srcport == 502 && !(modbus.regval_uint16 == 65000)",
                    ["modbus.regval_uint16"])
    vals = [int(v) for r in normal for v in r[0].split(",")]
    ep = c.episode("value_out_of_range", flt, SERVER, MASTER, ["value_out_of_range"], ["behaviour_anomaly"],
                   f"Holding register 3 reads 65000 for ~10 s ({len(rows)} FC3 responses), far outside its normal envelope; all other responses carry registers 0..9 in {min(vals)}..{max(vals)}. The values travel in the server's responses (src = server).")
    return [ep], "Clean polling, then register 3 jumps to 65000 for ~10 s, then back."


def modbus_restart_scan(c):
    eps = [c.episode("device_restart_command", "modbus.func_code == 8", MASTER, SERVER,
                     ["device_restart_command"], ["new_function_code", "behaviour_anomaly"],
                     "The polling master sends FC8 Diagnostics sub-function 1 (Restart Communications Option, data 0x0000) on its own connection; the server echoes it.")]
    s = c.stream_of("mbtcp.unit_id > 1")
    f0, t0, f1, t1, n, flt = c.newcomer_window(s)
    units = tshark(c.path, f"tcp.stream == {s} && mbtcp && tcp.dstport == 502", ["mbtcp.unit_id"])
    answered = tshark(c.path, f"tcp.stream == {s} && mbtcp && tcp.srcport == 502", ["mbtcp.unit_id"])
    eps.append(c.make_episode("scan", f0, t0, f1, t1, n, flt, NEWCOMER, SERVER,
                              ["scan", "new_asset", "new_channel"],
                              ["response_timeout", "behaviour_anomaly", "new_function_code"],
                              f"New host 10.77.0.3 walks unit ids {units[0][0]}..{units[-1][0]} on one connection with FC3 reads of holding register 0 (count 1), 0.15 s timeout each. Only unit(s) {sorted({int(a[0]) for a in answered})} answer; pymodbus silently ignores unknown unit ids, so the other requests get no response (no exceptions).",
                              requests=len(units), answered=len(answered)))
    s = c.stream_of("modbus.func_code == 43")
    f0, t0, f1, t1, n = c.window(f"tcp.stream == {s}")
    eps.append(c.make_episode("device_identification", f0, t0, f1, t1, n, f"tcp.stream == {s}", NEWCOMER, SERVER,
                              ["new_function_code"], ["new_channel", "scan", "behaviour_anomaly"],
                              "10.77.0.3 opens a new connection and reads the device identification: FC43 MEI 14, read codes 1 (basic) then 2 (regular); the server returns vendor, product code, revision, URL, product and model name."))
    return eps, "Clean polling, then a restart-communications diagnostic, a unit-id scan from a new host, and a device-identification read."


def s7_steady(c):
    return [], "Baseline: client 10.77.0.1 (rack 0, slot 1) reads DB1 bytes 0..31 every 1 s for 120 s over one ISO-on-TCP connection. No anomaly; the whole capture is clean."


def s7_stop(c):
    eps = [c.episode("plc_stop", "s7comm.param.func == 0x29", MASTER, SERVER, ["plc_stop"],
                     ["new_function_code", "behaviour_anomaly"],
                     "The polling client sends S7 Job PLC Stop (function 0x29) on its own connection; the server acknowledges (CPU state -> STOP). Reads continue."),
           c.episode("plc_start", "s7comm.param.func == 0x28", MASTER, SERVER, ["plc_start"],
                     ["new_function_code", "behaviour_anomaly"],
                     "10 s later the same client sends PI-Service (function 0x28) P_PROGRAM, i.e. plc_hot_start; the server acknowledges (CPU state -> RUN).")]
    return eps, "Clean DB1 polling, then PLC STOP and, 10 s later, a hot start from the polling client."


def new_client(c, proto, etype, description):
    """The newcomer's first connection that carries `proto`: a write or command by a new client."""
    s = c.stream_of(f"ip.src == {NEWCOMER} && {proto}")
    f0, t0, f1, t1, n, flt = c.newcomer_window(s)
    return c.make_episode(etype, f0, t0, f1, t1, n, flt, NEWCOMER, SERVER,
                          ["new_asset", "new_channel", "unauthorized_write"],
                          ["new_function_code", "behaviour_anomaly"], description)


def s7_write(c):
    ep = new_client(c, "s7comm", "new_client_write",
                    "New host 10.77.0.3 opens ISO-on-TCP (COTP CR, rack 0 slot 1), sets up communication, writes 4 bytes 7f ff 00 00 into DB1 at byte 4 (Write Var 0x05), and disconnects (COTP DR).")
    return [ep], "Clean DB1 polling, then a DB1 write from a new client."


def dnp3_steady(c):
    return [], "Baseline: opendnp3 master 10.77.0.1 (link address 1) polls opendnp3 outstation 10.77.0.2 (TCP 20000, link address 10): session start-up (DISABLE_UNSOLICITED, integrity poll class 0123, ENABLE_UNSOLICITED; the outstation answers both unsolicited requests with IIN2.0 function not supported), then a class 0 integrity poll every 2 s and a class 1/2/3 event poll every 1 s, each event response confirmed, for 120 s. No anomaly; the whole capture is clean."


def dnp3_pair(c, req_flt):
    """A DNP3 request (first frame matching req_flt) and the outstation's response with the same
    application sequence number that follows it on the same TCP stream."""
    f, t, stream, seq = tshark(c.path, req_flt, ["frame.number", "frame.time_epoch", "tcp.stream", "dnp3.al.seq"])[0]
    rsp = tshark(c.path, f"dnp3.al.func == 129 && tcp.stream == {stream} && dnp3.al.seq == {seq} && frame.number > {f}",
                 ["frame.number"])[0][0]
    return int(f), int(rsp), f"frame.number == {f} || frame.number == {rsp}"


def dnp3_restart(c):
    f13, r13, flt = dnp3_pair(c, "dnp3.al.func == 13")
    delay = tshark(c.path, f"frame.number == {r13}", ["dnp3.al.obj", "dnp3.al.iin"])[0]
    eps = [c.episode("device_restart_command", flt, MASTER, SERVER, ["device_restart_command"],
                     ["new_function_code", "behaviour_anomaly", "poll_cycle_broken", "response_timeout", "latency_shift"],
                     f"The polling master sends COLD_RESTART (function 13) on its own session; the outstation answers (objects {delay[0]}: g52v1 time delay coarse, IIN {delay[1]}).")]
    # The outstation then really restarts: its whole opendnp3 stack goes down (FIN), the master's
    # reconnects are refused (RST) until the new stack listens, and the new outstation reports
    # IIN1.7 until the master clears it with WRITE g80v1 index 7.
    fin = tshark(c.path, f"tcp.flags.fin == 1 && ip.src == {SERVER} && frame.number > {r13}",
                 ["frame.number", "frame.time_epoch"])[0]
    rst = tshark(c.path, "dnp3.al.iin.rst == 1", ["frame.number", "frame.time_epoch"])
    if rst:
        w, wr, _ = dnp3_pair(c, f"dnp3.al.func == 2 && frame.number > {rst[0][0]}")
        last = max(wr, int(rst[-1][0]))
    else:
        w = wr = None
        last = int(tshark(c.path, f"dnp3.al.func == 129 && frame.number > {fin[0]}", ["frame.number"])[0][0])
    flt2 = f"tcp.port == 20000 && frame.number >= {fin[0]} && frame.number <= {last}"
    up = tshark(c.path, f"tcp.flags.syn == 1 && tcp.flags.ack == 1 && frame.number > {fin[0]}",
                ["frame.number", "frame.time_epoch"])
    refused = len(tshark(c.path, f"tcp.flags.reset == 1 && ip.src == {SERVER} && {flt2}", ["frame.number"]))
    # the last handshake before the first response with IIN1.7 is the new stack's
    new_up = [u for u in up if not rst or int(u[0]) < int(rst[0][0])][-1]
    eps.append(c.episode(
        "device_restarted", flt2, SERVER, MASTER,
        ["device_restarted"] if rst else [],
        ["unauthorized_write", "new_function_code", "address_out_of_range", "poll_cycle_broken",
         "response_timeout", "behaviour_anomaly", "latency_shift"],
        (f"0.5 s after its answer the outstation restarts its whole opendnp3 stack: it closes the TCP connection (FIN), "
         f"the master's reconnect attempts are refused ({refused} RST) until the new stack listens, and the master reconnects "
         f"({c.rel(float(new_up[1])) - c.rel(float(fin[1])):.2f} s after the FIN). "
         + (f"The new outstation reports IIN1.7 DEVICE_RESTART ({len(rst)} response(s), frame(s) {', '.join(r[0] for r in rst)}); "
            f"the master clears it with WRITE (function 2) g80v1 index 7 = 0 (frame {w}, answered in {wr}), its only write in the capture, "
            f"then repeats its session start-up (integrity poll class 0123, ENABLE_UNSOLICITED) and resumes polling. "
            f"otwatch counts DNP3 WRITE as a write, hence unauthorized_write/new_function_code/address_out_of_range are acceptable here."
            if rst else "No response with IIN1.7 DEVICE_RESTART appears in the capture.")),
        iin_device_restart_frames=[int(r[0]) for r in rst], iin_clear_write_frame=w,
        reconnects_refused=refused, outstation_down_s=round(float(new_up[1]) - float(fin[1]), 6)))
    return eps, "Clean DNP3 polling, then a COLD_RESTART from the polling master; the outstation answers, really restarts its stack, and reports IIN1.7 DEVICE_RESTART after the master reconnects."


def dnp3_operate(c):
    f5, r5, flt = dnp3_pair(c, "dnp3.al.func == 5")
    obj = tshark(c.path, f"frame.number == {f5}", ["dnp3.al.obj"])[0][0]
    ep = c.episode("unauthorized_write", flt, MASTER, SERVER, ["unauthorized_write"],
                   ["new_function_code", "address_out_of_range", "behaviour_anomaly"],
                   f"The polling master, which had only read (and confirmed, and sent the start-up unsolicited enable/disable), sends DIRECT_OPERATE (function 5) of a CROB (objects {obj}: g12v1) LATCH_ON on index 0; the outstation accepts it (status SUCCESS) and echoes it.")
    return [ep], "Clean DNP3 polling, then one DIRECT_OPERATE of a CROB on index 0 by the polling master."


def silence(c, proto, timeouts):
    """A frozen server (SIGSTOP): from the last frame with its application data before the longest
    gap in them to the first after it."""
    rows = [(int(f), float(t)) for f, t in tshark(c.path, f"ip.src == {SERVER} && {proto} && tcp.len > 0",
                                                   ["frame.number", "frame.time_epoch"])]
    gap, i = max((rows[k + 1][1] - rows[k][1], k) for k in range(len(rows) - 1))
    (f0, t0), (f1, t1) = rows[i], rows[i + 1]
    flt = f"frame.number >= {f0} && frame.number <= {f1}"
    n = len(tshark(c.path, flt, ["frame.number"]))
    return c.make_episode("device_silent", f0, t0, f1, t1, n, flt, MASTER, SERVER, ["device_silent"],
                          timeouts + ["poll_cycle_broken", "latency_shift", "behaviour_anomaly"],
                          f"The server process is frozen (SIGSTOP) for ~20 s and then resumed (SIGCONT): it sends nothing for {gap:.1f} s while the kernel still ACKs. The episode runs from its last frame before the silence to its first after it.",
                          silent_s=round(gap, 6))


def iec104_steady(c):
    return [], "Baseline: c104 master 10.77.0.1 (STARTDT, general interrogation and clock synchronisation at connection) sends a station interrogation every 10 s to c104 station 10.77.0.2:2404 (common address 1), which also reports four short floats every 2 s, for 120 s. No anomaly; the whole capture is clean."


def iec104_command(c):
    ep = new_client(c, "iec60870_104", "new_client_command",
                    "New host 10.77.0.3 connects to 2404 (STARTDT only) and sends a single command C_SC_NA_1 (on, execute) to IOA 20, which the station confirms and reports (the single point at IOA 10); it disconnects 1 s later.")
    return [ep], "Clean interrogations and periodic reports, then a single command from a new client."


def iec104_silent(c):
    return [silence(c, "iec60870_104", [])], "Clean interrogations and periodic reports, then the station goes silent for ~20 s, then recovers."


def enip_steady(c):
    return [], "Baseline: cpppo client 10.77.0.1 keeps one EtherNet/IP session (RegisterSession) with cpppo controller 10.77.0.2:44818 and reads the tags Temp[0-3] and Setpoint[0-3] (Read Tag 0x4C in SendRRData) every 1 s for 120 s. No anomaly; the whole capture is clean."


def enip_write(c):
    ep = new_client(c, "enip", "new_client_write",
                    "New host 10.77.0.3 registers a session and writes Setpoint[1] = 150 (Write Tag 0x4D, INT), which the controller accepts, then disconnects.")
    return [ep], "Clean tag polling, then a tag write from a new client."


def enip_reset(c):
    f, t = tshark(c.path, "cip.sc == 0x05", ["frame.number", "frame.time_epoch"])[0]
    stream = c.stream_of(f"frame.number == {f}")
    end = tshark(c.path, f"tcp.stream == {stream}", ["frame.number", "frame.time_epoch"])[-1]
    flt = f"tcp.stream == {stream} && frame.number >= {f}"
    n = len(tshark(c.path, flt, ["frame.number"]))
    ep = c.make_episode("device_restart_command", int(f), float(t), int(end[0]), float(end[1]), n, flt,
                        MASTER, SERVER, ["device_restart_command"],
                        ["new_function_code", "behaviour_anomaly"],
                        "The polling client sends Reset (service 0x05) to the Identity object (class 1, instance 1) on its session. cpppo does not implement it: it answers with encapsulation status 0x08 and closes the session; the client reconnects and polling goes on.")
    return [ep], "Clean tag polling, then an Identity Reset from the polling client, which the controller refuses."


def enip_silent(c):
    return [silence(c, "enip", ["response_timeout"])], "Clean tag polling, then the controller goes silent for ~20 s; cpppo's client waits for its outstanding read, so it falls silent too; on resume the missed rounds follow in a burst."


ORDER = ["modbus_steady", "modbus_write", "modbus_flood", "modbus_silent", "modbus_slow",
         "modbus_values", "modbus_restart_scan", "s7_steady", "s7_stop", "s7_write",
         "dnp3_steady", "dnp3_restart", "dnp3_operate", "iec104_steady", "iec104_command",
         "iec104_silent", "enip_steady", "enip_write", "enip_reset", "enip_silent",
         "modbus_steady_hour", "s7_steady_hour", "dnp3_steady_hour", "iec104_steady_hour",
         "enip_steady_hour"]


def steady_hour(c):
    """An hour of the same steady traffic as the protocol's 120-s steady capture."""
    eps, desc = globals()[c.name[:-len("_hour")]](c)
    return eps, desc.replace("for 120 s", "for 60 min").replace("120 s of", "60 min of")


def main():
    out = {"generated_by": "contrib/scenarios/make_scenarios.py + label_scenarios.py",
           "conventions": "times UTC RFC 3339 with microseconds; *_s = seconds from the capture's first frame; frames 1-based as tshark frame.number; episode start/end = first/last frame of the anomalous traffic (tshark_filter selects it); clean_prefix = the first 60 s, contains no scenario traffic; expected_alerts = should be raised for the episode; acceptable_alerts = may also be raised without counting as a false positive",
           "hosts": {MASTER: "master/HMI (02:77:00:00:00:01)", SERVER: "server: pymodbus on 502 / python-snap7 on 102 / opendnp3 on 20000 / c104 on 2404 / cpppo on 44818 (02:77:00:00:00:02)",
                     NEWCOMER: "host that appears only in the anomalous episodes (02:77:00:00:00:03)"},
           "captures": {}}
    for name in ORDER:
        if not any(os.path.exists(os.path.join(OUT, name + x)) for x in (".pcap", ".pcap.gz")):
            print(f"skip {name}: no capture", file=sys.stderr)
            continue
        c = Cap(name)
        d = c.summary()
        eps, desc = (steady_hour if name.endswith("_steady_hour") else globals()[name])(c)
        d["description"] = desc
        for ep in eps:
            if ep["start_s"] <= PREFIX_S:
                raise SystemExit(f"{name}: episode {ep['type']} starts inside the clean prefix")
        d["episodes"] = eps
        out["captures"][name] = d
        print(f"{name}: {d['frames']} frames, {d.get('modbus_pdus', d.get('s7comm_pdus', d.get('dnp3_pdus', d.get('iec104_frames', d.get('enip_frames')))))} PDUs, "
              + "; ".join(f"{e['type']} {e['start_s']:.3f}-{e['end_s']:.3f}s" for e in eps))
    with open(os.path.join(OUT, "labels.json"), "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
