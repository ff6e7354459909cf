#!/usr/bin/env python3
"""Report of bench/compare-rounds.sh: compare.sh's figures over several
rounds (each round one results.tsv), as markdown.

  rounds_report.py --systems "granary granary-cluster s3fs" --command ... round-1.tsv ...

For every figure of compare_report.ROWS that a round measured: per system
the median over the rounds and each round's value. For the throughput
figures (kind "rate"), the ratio of each pair of systems within each round
(SUBJECT's order says which is over which), and the median of those
ratios: the two were measured in the same invocation, on the machine as it
was then.
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_report import NAMES, ORDER, ROWS, fmt, load  # noqa: E402

# A pair's ratio is the system earlier here over the later one: meta+worker
# over standalone, Granary over its peers, every system over local disk,
# as the goals put them.
SUBJECT = ["granary-cluster", "granary", "rclone", "s3fs", "local"]


def ratio(v):
    return "-" if v is None else f"{v:.2f}"


def cell(values, show=fmt):
    """Median, then every round's value in round order ('-': not measured)."""
    have = [v for v in values if v is not None]
    if not have:
        return "-"
    rounds = ", ".join(show(v) for v in values)
    return f"**{show(statistics.median(have))}** ({rounds})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--systems", required=True)
    ap.add_argument("--command", default="")
    ap.add_argument("tsv", nargs="+")
    a = ap.parse_args()
    systems = sorted(a.systems.split(), key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER))
    unknown = [s for s in systems if s not in NAMES]
    if unknown:
        sys.exit(f"rounds_report: unknown system '{unknown[0]}'")
    rounds = [load(p) for p in a.tsv]

    def series(s, key):
        return [r.get(s, {}).get(key) for r in rounds]

    out = []
    if a.command:
        out += [f"`{a.command}`", ""]
    out += [f"{len(rounds)} rounds; each cell: the median in bold, then every round's "
            "figure in round order.", "",
            "| | " + " | ".join(NAMES[s] for s in systems) + " |",
            "|---" * (len(systems) + 1) + "|"]
    for label, key, _kind in ROWS:
        cols = [series(s, key) for s in systems]
        if all(v is None for col in cols for v in col):
            continue
        out.append(f"| {label} | " + " | ".join(cell(col) for col in cols) + " |")

    subjects = sorted(systems, key=SUBJECT.index)
    pairs = [(x, y) for i, x in enumerate(subjects) for y in subjects[i + 1:]]
    lines = []
    for label, key, kind in ROWS:
        if kind != "rate":
            continue
        for x, y in pairs:
            ratios = []
            for r in rounds:
                vx, vy = r.get(x, {}).get(key), r.get(y, {}).get(key)
                ratios.append(vx / vy if vx is not None and vy else None)
            if all(v is None for v in ratios):
                continue
            lines.append(f"| {label} | {NAMES[x]} / {NAMES[y]} | {cell(ratios, ratio)} |")
    if lines:
        out += ["", "Ratios within each round (median in bold, then each round's):", "",
                "| figure | systems | ratio |", "|---|---|---|"] + lines
    print("\n".join(out))


if __name__ == "__main__":
    main()
