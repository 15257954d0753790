"""The fault-injection campaign: every case of tests/fault_cases.py, then the table.

    python benchmarks/fault_suite.py                  # everything: ~270 cases (an hour or more on 2 shared cores)
    python benchmarks/fault_suite.py --fast           # only the cases `make test` runs
    python benchmarks/fault_suite.py --group stores   # one group
    python benchmarks/fault_suite.py --match map      # the cases whose name holds "map"
    python benchmarks/fault_suite.py --json out.json  # the verdicts, one per case

Prints one row per group — tried, handled, tracebacks, lost, silent, other — and every case not
handled with the reason. Exit status 1 when any case was not handled. The target is 0 tracebacks,
0 lost and 0 silent. Cases a machine cannot try (a tmpfs needs root) are counted as skipped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import fault_cases as F  # noqa: E402

COLUMNS = ("tried", "handled", "traceback", "lost", "silent", "mishandled", "skipped")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true", help="only the cases of `make test`")
    ap.add_argument("--group", action="append", help="only these groups (repeatable)")
    ap.add_argument("--match", action="append", help="only cases whose name contains this (repeatable)")
    ap.add_argument("--bitflips", type=int, default=40, help="bit-flip cases (default 40)")
    ap.add_argument("--json", type=Path, help="write every verdict here")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    cases = F.all_cases() + F.bitflip_cases(args.bitflips) + F.process_cases()
    cases = [c for c in cases if (c.fast or not args.fast) and (not args.group or c.group in args.group)
             and (not args.match or any(m in c.name for m in args.match))]
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="miam-faults-"))
    start = time.monotonic()
    print(f"building the baseline in {work} ...", file=sys.stderr)
    base = F.build_base(work / "base")
    verdicts = []
    for i, case in enumerate(cases):
        v = F.run_case(case, base, work / "cases" / f"{i:03d}")
        verdicts.append(v)
        print(f"[{i + 1}/{len(cases)}] {v.outcome:10s} {v.result.seconds:6.1f}s  {case.group}: {case.name}", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(work / "cases" / f"{i:03d}", ignore_errors=True)
    print_table(verdicts)
    print(f"\n{len(cases)} cases in {time.monotonic() - start:.0f}s")
    if args.json:
        args.json.write_text(json.dumps([{"case": v.case.name, "group": v.case.group, "outcome": v.outcome, "why": v.why,
                                          "exit": v.result.code, "seconds": round(v.result.seconds, 2)} for v in verdicts], indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(v.outcome in ("handled", "skipped") for v in verdicts) else 1


def print_table(verdicts) -> None:
    groups: dict[str, dict[str, int]] = {}
    for v in verdicts:
        row = groups.setdefault(v.case.group, dict.fromkeys(COLUMNS, 0))
        row["tried" if v.outcome != "skipped" else "skipped"] += 1
        if v.outcome != "skipped":
            row[v.outcome] += 1
    total = {c: sum(r[c] for r in groups.values()) for c in COLUMNS}
    width = max(len(g) for g in [*groups, "total"])
    print(f"\n{'group':<{width}}  " + "  ".join(f"{c:>10}" for c in COLUMNS))
    for g, row in [*groups.items(), ("total", total)]:
        print(f"{g:<{width}}  " + "  ".join(f"{row[c]:>10}" for c in COLUMNS))
    bad = [v for v in verdicts if v.outcome not in ("handled", "skipped")]
    if bad:
        print("\nnot handled:")
        for v in bad:
            print(f"  {v.outcome}: {v.case.group}: {v.case.name}: {v.why[:400]}")


if __name__ == "__main__":
    sys.exit(main())
