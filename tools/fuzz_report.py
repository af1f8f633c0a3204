#!/usr/bin/env python3
"""The fuzz suite's tallies as a table: every family's cases, typed refusals, accepted inputs
and failures, from build/fuzz/*.json (written by tests/fuzz) and the `fuzz ...:` lines
libmemx's fuzz tests print (read from the files named on the command line).

    python tools/fuzz_report.py [gtest-output.txt ...]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPP_LINE = re.compile(r"^fuzz (?P<family>.+): (?P<cases>\d+) cases, (?P<refused>\d+) typed refusals, (?P<accepted>\d+) accepted$")


def rows(logs: list[Path]) -> list[tuple[str, int, int, int, int | str]]:
    out: list[tuple[str, int, int, int, int | str]] = []
    for path in sorted((ROOT / "build" / "fuzz").glob("*.json")):
        t = json.loads(path.read_text())
        out.append((t["family"], t["cases"], t["refused"], t["accepted"], t.get("failure_count", len(t["failures"]))))
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if m := CPP_LINE.match(line.strip()):
                out.append((f"{m['family']} [{log.stem}]", int(m["cases"]), int(m["refused"]), int(m["accepted"]), "see gtest"))
    return out


def main(argv: list[str]) -> int:
    table = rows([Path(a) for a in argv])
    if not table:
        print("no fuzz tallies found (run `make fuzz`)", file=sys.stderr)
        return 1
    width = max(len(r[0]) for r in table)
    print(f"{'family':<{width}}  {'cases':>8}  {'refused':>8}  {'accepted':>8}  failures")
    for family, cases, refused, accepted, failures in table:
        print(f"{family:<{width}}  {cases:>8}  {refused:>8}  {accepted:>8}  {failures}")
    print(f"{'total':<{width}}  {sum(r[1] for r in table):>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
