"""Time helpers shared by the scenario peers: a timestamped log line on stderr, and a sleep
until an absolute time (the peers act at T0 + t, not after a delay)."""
import sys
import time


def log(*a):
    print(f"{time.time():.6f}", *a, file=sys.stderr, flush=True)


def sleep_until(t):
    while True:
        d = t - time.time()
        if d <= 0:
            return
        time.sleep(min(d, 0.2))
