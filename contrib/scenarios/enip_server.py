"""EtherNet/IP + CIP controller for the scenario captures: cpppo (PyPI) server on TCP and UDP
44818, a Logix-style tag server.

Tags: Temp REAL[4], each a stationary sine around 20 + i (amplitude 0.5 + 0.1 i, period 12 + 2 i
s, seeded noise of +-0.05), refreshed whenever the server is idle; Setpoint INT[4], written only
by clients. cpppo answers Read Tag (0x4C), Write Tag (0x4D), Get/Set Attribute Single and
Get Attributes All; it does not implement the Identity object's Reset (0x05): it answers such a
request with encapsulation status 0x08 and closes the session, as the enip_reset capture shows.

SIGSTOP/SIGCONT from the generator freeze and resume it (a silent device).
"""
import math
import random
import sys
import time

from cpppo.server.enip.main import main as enip_main, tags

T0 = time.time()
rng = random.Random(44818)


def value(i):
    t = time.time() - T0
    return 20.0 + i + (0.5 + 0.1 * i) * math.sin(2 * math.pi * t / (12 + 2 * i)) + rng.uniform(-0.05, 0.05)


def refresh():
    ent = dict.get(tags, "Temp")
    if ent is not None:
        ent.attribute[0:4] = [value(i) for i in range(4)]


def main():
    argv = ["--no-config", "--address", "0.0.0.0:44818", "Temp=REAL[4]", "Setpoint=INT[4]"] + sys.argv[1:]
    return enip_main(argv=argv, idle_service=refresh)


if __name__ == "__main__":
    sys.exit(main())
