"""POST /enqueue under callgrind: instructions per request, kasp or the baseline.

Instruction counts do not move with the load other tenants put on the machine, so this is
how the gap between kasp and bench/baselines/enqueue_app.py is attributed
(docs/PERFORMANCE.md, issue 12, "The remaining gap, line by line"). The server runs as
bench/servers.py starts it (`python -m sanic TARGET --factory --single-process`, CPU 0),
under `valgrind --tool=callgrind --instr-atstart=no`; a warm-up of WARMUP requests runs
uninstrumented; then instrumentation is switched on (`callgrind_control -i on`), REQUESTS
requests are sent over CONNECTIONS keep-alive connections by the small client below
(CPU 1, the bodies of bench/enqueue.lua), and the counts are dumped (`callgrind_control -d`).

    python bench/callgrind_enqueue.py kasp|baseline OUT_FILE [REQUESTS] [QUEUE_SIZE]

CALLGRIND_PYTHON=path runs the server with another interpreter (its own venv with the same
packages); with a Python 3.12 one, CALLGRIND_PERF=1 adds `-X perf`: every Python call then
goes through a trampoline of its own, which callgrind counts as a function, and
bench/callgrind_names.py names them from /tmp/perf-PID.map, so the counts are by Python
function (the calls cost more that way; use it for shares, the plain run for totals).
CALLGRIND_ARGS adds valgrind options (`--cache-sim=yes`: simulated cache misses per request);
CALLGRIND_WARMUP sets the warm-up (default 2,000 requests), CALLGRIND_CPU the server's CPU
(0 or 1, default 0; the client takes the other).

Prints the statuses seen and the instructions per request; `callgrind_annotate
--inclusive=yes OUT_FILE` gives them by function (divide by REQUESTS).
"""

from __future__ import annotations

import os
import re
import selectors
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import BASELINE_TARGET, KASP_TARGET, free_port  # noqa: E402

CONNECTIONS = 4
WARMUP = int(os.environ.get("CALLGRIND_WARMUP", "2000"))
PAYLOAD = "p" * 100


def request(prefix: str, n: int) -> bytes:
    body = f'{{"id":"{prefix}-{n}","payload":"{PAYLOAD}","max_retries":3}}'.encode()
    return (
        b"POST /enqueue HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
    )


_LENGTH = re.compile(rb"content-length: *([0-9]+)", re.I)


def drive(port: int, prefix: str, total: int) -> Counter[int]:
    """`total` requests, one at a time on each of CONNECTIONS keep-alive connections."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]
    statuses: Counter[int] = Counter()
    buffers = [b""] * CONNECTIONS
    sent = 0
    for s in socks:  # one request in flight per connection
        s.sendall(request(prefix, sent))
        sent += 1
    done = 0
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    while done < total:
        for key, _ in sel.select():
            i = key.data
            s = socks[i]
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("server closed a connection")
            buffers[i] += chunk
            while True:
                buf = buffers[i]
                head_end = buf.find(b"\r\n\r\n")
                if head_end < 0:
                    break
                m = _LENGTH.search(buf, 0, head_end)
                length = int(m.group(1)) if m else 0
                if len(buf) < head_end + 4 + length:
                    break
                statuses[int(buf[9:12])] += 1
                buffers[i] = buf[head_end + 4 + length :]
                done += 1
                if sent < total:
                    s.sendall(request(prefix, sent))
                    sent += 1
    for s in socks:
        s.close()
    return statuses


def control(*args: str) -> None:
    done = subprocess.run(["callgrind_control", *args], capture_output=True, text=True)
    if done.returncode or "OK" not in done.stdout:
        raise RuntimeError(f"callgrind_control {args}: {done.stdout}{done.stderr}")


def main() -> None:
    # vgdb (behind callgrind_control) finds the server by pipes named after LOGNAME/USER and
    # HOST, and the server's HOST is kasp's listen address: the same for both.
    for name in ("LOGNAME", "USER"):
        os.environ.setdefault(name, "kasp")
    os.environ["HOST"] = "127.0.0.1"
    which, out = sys.argv[1], Path(sys.argv[2]).resolve()
    total = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000
    queue_size = sys.argv[4] if len(sys.argv) > 4 else "10000000"
    target = {"kasp": KASP_TARGET, "baseline": BASELINE_TARGET}[which]
    port = free_port()
    server_cpu = os.environ.get(
        "CALLGRIND_CPU", "0"
    )  # counts do not depend on it: two runs may share a machine
    env = {
        **os.environ,
        "QUEUE_SIZE": queue_size,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PYTHONPATH": str(ROOT),
    }
    cmd = [
        "taskset", "-c", server_cpu,
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
        *os.environ.get("CALLGRIND_ARGS", "").split(),
        os.environ.get("CALLGRIND_PYTHON", sys.executable),
        *(["-X", "perf"] if os.environ.get("CALLGRIND_PERF") else []),
        "-m", "sanic", target, "--factory", "--single-process", "--no-motd",
        "-H", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
    log = open(out.with_suffix(".log"), "wb")  # noqa: SIM115 - the server's output, kept beside the counts
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start; see {out.with_suffix('.log')}") from None
                time.sleep(0.5)
        os.sched_setaffinity(0, {1 - int(server_cpu)})
        warm = drive(port, "warm", WARMUP)
        control("-i", "on", str(proc.pid))
        control("-z", str(proc.pid))
        started = time.monotonic()
        statuses = drive(port, "job", total)
        took = time.monotonic() - started
        control("-d", str(proc.pid))
        control("-i", "off", str(proc.pid))
    finally:
        proc.terminate()
        proc.wait(120)
    dumps = sorted(out.parent.glob(out.name + ".*[0-9]"))
    print(f"warm-up statuses {dict(warm)}; measured statuses {dict(statuses)} in {took:.1f} s")
    for dump in dumps:
        text = dump.read_text(errors="replace")
        m = re.search(r"^summary: *([0-9]+)", text, re.M) or re.search(r"^totals: *([0-9]+)", text, re.M)
        if m:
            print(
                f"{dump.name}: {int(m.group(1)):,} instructions, {int(m.group(1)) / total:,.0f} per request"
            )


if __name__ == "__main__":
    main()
