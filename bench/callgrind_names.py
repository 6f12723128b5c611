"""Name the Python functions in a callgrind dump of a `python3.12 -X perf` process.

With `-X perf` each Python code object runs through a trampoline of its own, which
callgrind counts as a function named by its address; /tmp/perf-PID.map says which
code object each address belongs to. Rewrites the dump in place:

    python bench/callgrind_names.py DUMP [PERF_MAP]
"""

from __future__ import annotations

import bisect
import re
import sys
from pathlib import Path


def main() -> None:
    dump = Path(sys.argv[1])
    text = dump.read_text()
    pid = re.search(r"^pid: *([0-9]+)", text, re.M)
    assert pid is not None, "not a callgrind dump"
    perf_map = Path(sys.argv[2] if len(sys.argv) > 2 else f"/tmp/perf-{pid.group(1)}.map")
    starts: list[int] = []
    spans: list[tuple[int, str]] = []
    for line in perf_map.read_text().splitlines():
        start, size, name = line.split(" ", 2)
        starts.append(int(start, 16))
        spans.append((int(size, 16), name.removeprefix("py::")))
    order = sorted(range(len(starts)), key=starts.__getitem__)
    starts = [starts[i] for i in order]
    spans = [spans[i] for i in order]

    def name_of(match: re.Match[str]) -> str:
        address = int(match.group(2), 16)
        i = bisect.bisect_right(starts, address) - 1
        if i >= 0 and address < starts[i] + spans[i][0]:
            return f"{match.group(1)}py:{spans[i][1]}{match.group(3) or ''}"
        return match.group(0)

    named = re.sub(r"^((?:c?fn)=\([0-9]+\) )0x([0-9a-f]+)('[0-9]+)?$", name_of, text, flags=re.M)
    dump.write_text(named)


if __name__ == "__main__":
    main()
