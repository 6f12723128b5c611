"""Instructions per POST /enqueue in the /enqueue handler alone (kasp's with its access
check, or the baseline's), under callgrind: the in-process counterpart of
bench/callgrind_enqueue.py, which counts the whole server.

Two runs under `valgrind --tool=callgrind` build the same BUILD requests (bench/handler_cost.py's)
and call the handler on the first 1,000 and on the first 3,000 of them; everything else
(imports, the app, the requests) is the same in both, so the difference over 2,000 is the
handler's cost per request, exactly (PYTHONHASHSEED fixed).

    python bench/handler_instructions.py kasp|baseline [QUEUE_SIZE]

(QUEUE_SIZE 10,000,000: the 202 path; 1: the 429 path.) Used for docs/PERFORMANCE.md,
issue 12, "The remaining gap, line by line".
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUILD = 3000
RUNS = (1000, 3000)


async def run(which: str, n: int, queue_size: int) -> dict[int, int]:
    from bench.handler_cost import _request

    app: Any
    if which == "baseline":
        from bench.baselines.enqueue_app import create_app

        os.environ["QUEUE_SIZE"] = str(queue_size)
        app = create_app()
    else:
        from service.app import create_app as create_kasp
        from service.parts import build_parts

        app = create_kasp(environ={"QUEUE_SIZE": str(queue_size)})
        app.ctx.parts = await build_parts(app.ctx.config)
    app.router.finalize()
    route, handler, _ = app.router.get("/enqueue", "POST", None)
    requests = [_request(app, route, i) for i in range(BUILD)]
    gc.collect()
    gc.freeze()
    statuses: dict[int, int] = {}
    for request in requests[:n]:
        response = await handler(request)
        statuses[response.status] = statuses.get(response.status, 0) + 1
    return statuses


def main() -> None:
    which = sys.argv[1]
    queue_size = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000_000
    if os.environ.get("HANDLER_INSTRUCTIONS_N"):  # inside valgrind
        print(asyncio.run(run(which, int(os.environ["HANDLER_INSTRUCTIONS_N"]), queue_size)))
        return
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in RUNS:
            out = Path(tmp) / f"callgrind.{n}"
            env = {**os.environ, "PYTHONHASHSEED": "0", "HANDLER_INSTRUCTIONS_N": str(n)}
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__]
            done = subprocess.run(
                [*cmd, which, str(queue_size)], env=env, capture_output=True, text=True, check=True
            )
            summary = re.search(r"^summary: *([0-9]+)", out.read_text(), re.M)
            assert summary is not None
            totals.append(int(summary.group(1)))
            print(f"{n} requests: {done.stdout.strip()}, {totals[-1]:,} instructions")
    per_request = (totals[1] - totals[0]) / (RUNS[1] - RUNS[0])
    print(f"{which} handler, QUEUE_SIZE={queue_size}: {per_request:,.0f} instructions per request")


if __name__ == "__main__":
    main()
