"""Fixture: a Python plugin that tries what the payload names and reports what it got as a
rejection (`<what>: <error>`), so the test reads what the sandbox answered. Anything it should
not have reached shows as a mutation of `LEAKED-<what>` (an unknown product): the test fails
on it. `loop`, `alloc`, `sleep`, `recurse`, `exit` and `crash` end the call the hard way;
anything else takes one unit of CATALOG-0001."""

import os
import sys
import time

import sluice_plugin as sluice


def leaked(what):
    return [sluice.stock(f"LEAKED-{what}", -1)]


def refused(what, error):
    raise sluice.Rejected(f"{what}: {type(error).__name__}: {error}")


def handle(message):
    what = bytes(message.payload).decode("utf-8", "replace")
    if what == "files":
        try:
            with open("/etc/passwd") as f:
                f.read()
        except OSError as e:
            try:
                os.listdir("/")
            except OSError:
                refused(what, e)
            return leaked("listdir")
        return leaked(what)
    if what == "write-file":
        try:
            with open("/tmp/sluice-hostile", "w") as f:
                f.write("x")
        except OSError as e:
            refused(what, e)
        return leaked(what)
    if what == "sockets":
        try:
            import socket

            socket.create_connection(("127.0.0.1", 5432), timeout=1)
        except Exception as e:  # noqa: BLE001 - ImportError or OSError: both are refusals
            refused(what, e)
        return leaked(what)
    if what == "lookup":
        try:
            import socket

            socket.getaddrinfo("localhost", 80)
        except Exception as e:  # noqa: BLE001
            refused(what, e)
        return leaked(what)
    if what == "env":
        names = [n for n in os.environ if n not in ("PYTHONHOME", "PYTHONPATH", "PYTHONUNBUFFERED")]
        if names:
            return leaked(what)
        raise sluice.Rejected(f"env: {len(names)} variables, args {sys.argv[1:]}")
    if what == "clocks":
        now = time.time()
        start = time.monotonic()
        if now < 1.7e9 or time.monotonic() < start:
            return leaked(what)
        return [sluice.stock("CATALOG-0001", -1)]
    if what == "sleep":
        time.sleep(20)
        return leaked(what)
    if what == "loop":
        while True:
            pass
    if what == "alloc":
        hoard = []
        while True:
            hoard.append(bytearray(1 << 20))
    if what == "recurse":
        sys.setrecursionlimit(1_000_000)

        def down(n):
            return down(n + 1) + 1

        return [sluice.stock("CATALOG-0001", -down(0))]
    if what == "exit":
        sys.exit(3)
    if what == "crash":
        raise RuntimeError("hostile plugin raises on purpose")
    if what == "stdin":
        data = sys.stdin.read() if sys.stdin else ""
        return [sluice.stock("CATALOG-0001", -1 - len(data))]
    return [sluice.stock("CATALOG-0001", -1)]


WitWorld = sluice.export(handle)
