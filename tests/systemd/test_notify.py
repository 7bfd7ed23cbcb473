# SPDX-License-Identifier: Apache-2.0
"""lokid under a fake systemd: NOTIFY_SOCKET is a datagram socket here. READY=1 must come only
once the socket accepts clients, STOPPING=1 on SIGTERM, then exit 0; with WATCHDOG_USEC set,
WATCHDOG=1 at least every half interval. Exits 77 (skipped) while lokid sends no WATCHDOG=1 at
all (the unit's WatchdogSec then needs the watchdog code first: see docs/deploy.md).

usage: test_notify.py LOKID
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOPOLOGY = os.path.join(HERE, "..", "lokid", "small.yaml")
WATCHDOG_USEC = 400000


def main():
    with tempfile.TemporaryDirectory(prefix="loki-notify-") as d:
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ns.bind(os.path.join(d, "notify"))
        ns.settimeout(0.05)
        sock = os.path.join(d, "lokid.sock")
        env = dict(os.environ, NOTIFY_SOCKET=os.path.join(d, "notify"),
                   WATCHDOG_USEC=str(WATCHDOG_USEC))
        p = subprocess.Popen([sys.argv[1], "--topology", TOPOLOGY, "--socket", sock, "--quiet"],
                             env=env)
        msgs = []  # (monotonic time, state)
        try:
            t_end = time.monotonic() + 20
            while time.monotonic() < t_end and not any(m == "READY=1" for _, m in msgs):
                try:
                    msgs.append((time.monotonic(), ns.recv(256).decode()))
                except socket.timeout:
                    assert p.poll() is None, "lokid exited %s before READY=1" % p.returncode
            assert any(m == "READY=1" for _, m in msgs), "no READY=1 within 20 s"
            # ready means serving: the socket accepts a connection now
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(sock)
            c.close()
            t_ready = time.monotonic()
            while time.monotonic() < t_ready + 2.0:
                try:
                    msgs.append((time.monotonic(), ns.recv(256).decode()))
                except socket.timeout:
                    pass
            p.send_signal(signal.SIGTERM)
            rc = p.wait(30)
            try:
                while True:
                    msgs.append((time.monotonic(), ns.recv(256).decode()))
            except socket.timeout:
                pass
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        states = [m for _, m in msgs]
        assert rc == 0, "lokid exited %d after SIGTERM" % rc
        assert "STOPPING=1" in states, states
        assert states.index("READY=1") < states.index("STOPPING=1"), states
        pings = [t for t, m in msgs if m == "WATCHDOG=1" and t_ready <= t <= t_ready + 2.0]
        print("READY=1, STOPPING=1, exit 0: ok; %d WATCHDOG=1 in 2 s" % len(pings))
        if not pings:
            print("SKIP: lokid sends no WATCHDOG=1 (WATCHDOG_USEC=%d)" % WATCHDOG_USEC)
            sys.exit(77)
        gaps = [b - a for a, b in zip([t_ready] + pings, pings + [t_ready + 2.0])]
        # half the interval plus scheduling slack; systemd would kill at the full interval
        assert max(gaps) < WATCHDOG_USEC / 1e6 * 0.9, "watchdog gap %.3f s" % max(gaps)


if __name__ == "__main__":
    main()
