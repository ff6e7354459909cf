#!/usr/bin/env python3
"""Report of bench/compare.sh: a markdown table (absolute figures and ratios
to local disk), the issue's goals for Granary, and a PNG chart.

  compare_report.py --results results.tsv --out-md results.md --out-png compare.png
                    --machine ... --versions ... --command ... --settings ... --date ...
  compare_report.py --insert docs/benchmarks.md --out-md results.md

results.tsv: one "system<TAB>key<TAB>value" per line. --insert puts
results.md between the <!-- compare.sh:begin --> and <!-- compare.sh:end -->
markers of the file (appending a section with them when absent), keeping the
rest of the file as it is.
"""
import argparse
import collections
import sys

BEGIN = "<!-- compare.sh:begin -->"
END = "<!-- compare.sh:end -->"
SECTION = "## Granary against s3fs, rclone and local disk"
ORDER = ["local", "granary", "granary-cluster", "s3fs", "rclone"]
NAMES = {
    "local": "local disk",
    "granary": "Granary standalone",
    "granary-cluster": "Granary meta+worker",
    "s3fs": "s3fs",
    "rclone": "rclone",
}

# (label, key, kind): kind "rate" = higher is better, ratio to local shown;
# "hit" = a ratio itself; "ratio" = a ratio to bytes read, lower is better;
# "count" = plain number; "seconds" = lower is better; "frac" = a ratio of
# two figures of the same system; "cpu" = CPU seconds per GB, lower is
# better, with the ratio to s3fs's in the same run.
ROWS = [
    ("cold epoch, TFRecord (MB/s)", "cold_mbps", "rate"),
    ("raw parallel GETs through the proxy, just before the cold epoch (MB/s)", "raw_get_mbps", "count"),
    ("cold epoch / raw GETs", "cold_raw_ratio", "frac"),
    ("CPU s/GB, cold epoch (the system's processes, user + system)", "cold_cpu_per_gb", "cpu"),
    ("CPU s/GB of the raw GETs (s3_get_bench)", "raw_get_cpu_per_gb", "cpu"),
    ("CPU s/GB of the store (S3 server + proxy), raw GETs", "raw_get_store_cpu_per_gb", "frac"),
    ("CPU s/GB of the store (S3 server + proxy), cold epoch", "cold_store_cpu_per_gb", "frac"),
    ("CPU s/GB of the readers, cold epoch", "cold_reader_cpu_per_gb", "frac"),
    ("warm epoch, TFRecord (MB/s)", "warm_mbps", "rate"),
    ("CPU s/GB, warm epochs", "warm_cpu_per_gb", "cpu"),
    ("epoch after drop_caches, from the disk cache (MB/s)", "disk_warm_mbps", "rate"),
    ("CPU s/GB, epoch after drop_caches", "disk_warm_cpu_per_gb", "cpu"),
    ("page cache growth / bytes read, cold epoch (S3 server's files left out)", "cold_cache_growth", "ratio"),
    ("page cache growth / bytes read, epoch after drop_caches", "disk_warm_cache_growth", "ratio"),
    ("mount's files resident / bytes read, cold epoch", "cold_mount_resident", "ratio"),
    ("cache dir's files resident / bytes read, cold epoch", "cold_cachedir_resident", "ratio"),
    ("mount's files resident / bytes read, epoch after drop_caches", "disk_warm_mount_resident", "ratio"),
    ("cache dir's files resident / bytes read, epoch after drop_caches", "disk_warm_cachedir_resident", "ratio"),
    ("dataset > cache, epoch 1 (MB/s)", "big_e1_mbps", "rate"),
    ("dataset > cache, epoch 2 (MB/s)", "big_e2_mbps", "rate"),
    ("dataset > cache, epoch 3 (MB/s)", "big_e3_mbps", "rate"),
    ("hit ratio, epoch 1", "big_e1_hit", "hit"),
    ("hit ratio, epoch 2", "big_e2_hit", "hit"),
    ("hit ratio, epoch 3", "big_e3_hit", "hit"),
    ("cache dir used after epoch 3 (MiB)", "big_e3_cache_mib", "count"),
    ("S3 bytes fetched, epoch 3 (MB)", "big_e3_s3_mb", "count"),
    ("small files, cold epoch (files/s)", "small_cold_fps", "rate"),
    ("small files, cold epoch (MB/s)", "small_cold_mbps", "rate"),
    ("CPU ms per file, small files cold (the system's processes, user + system)",
     "small_cold_cpu_ms_per_file", "cpu"),
    ("CPU ms per file of the store (S3 server + proxy), small files cold",
     "small_cold_store_cpu_ms_per_file", "frac"),
    ("CPU ms per file of the readers, small files cold", "small_cold_reader_cpu_ms_per_file", "frac"),
    ("small files, raw GETs of the same objects before it (objects/s)", "small_raw_get_fps", "rate"),
    ("small files, warm epoch (files/s)", "small_warm_fps", "rate"),
    ("small files, epoch after drop_caches (files/s)", "small_disk_warm_fps", "rate"),
    ("small files, page cache growth / bytes read, cold", "small_cold_cache_growth", "ratio"),
    ("small files, page cache growth / bytes read, after drop_caches", "small_disk_warm_cache_growth", "ratio"),
    ("small files, cache dir's files resident / bytes read, cold", "small_cold_cachedir_resident", "ratio"),
    ("small files, cache dir's files resident / bytes read, after drop_caches", "small_disk_warm_cachedir_resident", "ratio"),
    ("listing, fresh mount (entries/s)", "list_per_s", "rate"),
    ("stat, first after listing (/s)", "stat_first_per_s", "rate"),
    ("stat, cached (/s)", "stat_per_s", "rate"),
    ("mount of the metadata set (s)", "mount_seconds", "seconds"),
    ("S3 GETs, cold epoch", "cold_s3_gets", "count"),
    ("S3 requests, small-file cold epoch", "small_s3_requests", "count"),
    ("S3 requests, listing + stat", "meta_s3_requests", "count"),
]


FAILED = collections.defaultdict(set)  # system -> keys whose reader failed


def load(path):
    r = collections.defaultdict(dict)
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                continue
            try:
                r[parts[0]][parts[1]] = float(parts[2])
            except ValueError:
                FAILED[parts[0]].add(parts[1])
                r[parts[0]]  # the system ran
    for v in r.values():
        if v.get("cold_mbps") and v.get("raw_get_mbps"):
            v["cold_raw_ratio"] = v["cold_mbps"] / v["raw_get_mbps"]
        if "big_e3_s3_bytes" in v:
            v["big_e3_s3_mb"] = v["big_e3_s3_bytes"] / 1e6
    return r


def fmt(v):
    if v is None:
        return "-"
    if v == int(v):
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def hit(v):
    return f"{v:.2f}".replace("-0.00", "0.00")  # a few bytes of HTTP heads over


def get(r, sys_, key):
    return r.get(sys_, {}).get(key)


ACCELS = [("a100", "A100"), ("h100", "H100"), ("b200", "B200")]


def accel_table(r, systems):
    """Largest accelerator count at utilisation >= 0.9 per accelerator type
    (one row each), with the ratio to local disk from the same run."""
    models = [(m, label) for m, label in ACCELS
              if any(f"accel_{m}_sustained" in r.get(s, {}) or f"accel_{m}_sustained" in FAILED[s]
                     for s in systems)]
    if not models:
        return ""
    out = ["Accelerators each system keeps at utilisation >= 0.9 (MLPerf Storage's ResNet-50 "
           "emulation, page cache limited by the memory cgroup; in parentheses the ratio to "
           "local disk in this run; >= N: the sweep's bound was reached):",
           "",
           "| accelerator (records/s each) | " + " | ".join(NAMES[s] for s in systems) + " |",
           "|---" * (len(systems) + 1) + "|"]
    for m, label in models:
        per = next((get(r, s, f"accel_{m}_per_accel") for s in systems
                    if get(r, s, f"accel_{m}_per_accel")), None)
        base = get(r, "local", f"accel_{m}_sustained")
        cells = []
        for s in systems:
            v = get(r, s, f"accel_{m}_sustained")
            if v is None:
                cells.append("failed" if f"accel_{m}_sustained" in FAILED[s] else "-")
                continue
            cell = (">= " if get(r, s, f"accel_{m}_bound") else "") + fmt(v)
            if s != "local" and base:
                cell += f" ({v / base:.2f}x)"
            cells.append(cell)
        out.append(f"| {label} ({fmt(per) if per else '?'}) | " + " | ".join(cells) + " |")
    peaks = [f"{NAMES[s]} {fmt(get(r, s, 'accel_mem_peak_mib'))}" for s in systems
             if get(r, s, "accel_mem_peak_mib") is not None]
    if peaks:
        out.append("")
        out.append("Most memory the cgroup held during the sweep (MiB): " + ", ".join(peaks) + ".")
    return "\n".join(out)


def table(r, systems):
    head = "| | " + " | ".join(NAMES[s] for s in systems) + " |"
    out = [head, "|---" * (len(systems) + 1) + "|"]
    for label, key, kind in ROWS:
        cells = []
        base = get(r, "local", key)
        for s in systems:
            v = get(r, s, key)
            if v is None:
                cells.append("failed" if key in FAILED[s] else "-")
            elif kind == "rate" and base and s != "local":
                cells.append(f"{fmt(v)} ({v / base:.2f}x)")
            elif kind == "hit":
                cells.append(hit(v))
            elif kind in ("ratio", "frac"):
                cells.append(f"{v:.2f}")
            elif kind == "cpu":
                ref = get(r, "s3fs", key)
                cells.append(f"{v:.3f}" + (f" ({v / ref:.2f}x s3fs)" if ref and s != "s3fs" else ""))
            else:
                cells.append(fmt(v))
        if all(c in ("-", "failed") for c in cells) and not any(key in FAILED[s] for s in systems):
            continue
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    if len(out) == 2:
        out = []  # no row measured (--phases without epochs, big, small, meta)
    if "s3" in r and "raw_get_mbps" in r["s3"]:
        out.append("")
        out.append(f"Raw S3 GET throughput through the counting proxy, same concurrency, at the "
                   f"start of the run (the store's files still in the page cache): "
                   f"{fmt(r['s3']['raw_get_mbps'])} MB/s.")
    self_rows = []
    for s in ("granary", "granary-cluster"):
        vals = [get(r, s, f"big_e{e}_self_hit") for e in (1, 2, 3)]
        if any(v is not None for v in vals):
            self_rows.append(f"{NAMES[s]} {' / '.join('-' if v is None else hit(v) for v in vals)}")
    if self_rows:
        out.append("Hit ratios as Granary itself counts them (store bytes), epochs 1/2/3: "
                   + "; ".join(self_rows) + ".")
    return "\n".join(out)


def goals(r):
    lines = []

    def check(name, cond, detail):
        if cond is None:
            lines.append(f"- {name}: not measured ({detail})")
        else:
            lines.append(f"- {name}: **{'met' if cond else 'not met'}** ({detail})")

    loc = r.get("local", {})
    for s in ("granary", "granary-cluster"):
        if s not in r:
            continue
        g = r[s]
        lines.append(f"\n{NAMES[s]}:\n")
        w, lw = g.get("warm_mbps"), loc.get("warm_mbps")
        check("warm epoch >= 0.9 of local", None if not (w and lw) else w / lw >= 0.9,
              f"{w / lw:.2f}" if w and lw else "no local figure")
        growth = [g.get("cold_cache_growth"), g.get("disk_warm_cache_growth")]
        check("page cache growth <= 1.1x the bytes read, cold and after drop_caches",
              None if None in growth else max(growth) <= 1.1,
              "cold, after drop_caches: " + ", ".join("-" if x is None else f"{x:.2f}" for x in growth))
        hits = [g.get("big_e2_hit"), g.get("big_e3_hit")]
        check("hit ratio with dataset > cache >= 0.6 from the second epoch on",
              None if None in hits else min(hits) >= 0.6,
              "epochs 2, 3: " + ", ".join("-" if h is None else hit(h) for h in hits))
        c, cs, cr = g.get("cold_mbps"), r.get("s3fs", {}).get("cold_mbps"), r.get("rclone", {}).get("cold_mbps")
        ok = None if not (c and cs and cr) else (c / cs >= 2 and c / cr >= 1.5)
        check("cold epoch >= 2x s3fs and >= 1.5x rclone", ok,
              f"{c / cs:.2f}x s3fs, {c / cr:.2f}x rclone" if c and cs and cr else "a peer is missing")
        cp, cps = g.get("cold_cpu_per_gb"), r.get("s3fs", {}).get("cold_cpu_per_gb")
        check("cold-epoch CPU per GB <= 0.5x s3fs's", None if not (cp and cps) else cp / cps <= 0.5,
              f"{cp:.3f} against {cps:.3f} s/GB, {cp / cps:.2f}x" if cp and cps else "s3fs missing")
        rg = g.get("cold_raw_ratio")
        check("cold epoch >= 0.6 of raw parallel GETs through the same proxy",
              None if rg is None else rg >= 0.6,
              f"{rg:.2f}: {fmt(c)} against {fmt(g.get('raw_get_mbps'))} MB/s" if rg is not None
              else "no raw GET figure")
        f, fs = g.get("small_cold_fps"), r.get("s3fs", {}).get("small_cold_fps")
        check("small files cold >= 4x s3fs", None if not (f and fs) else f / fs >= 4,
              f"{f / fs:.2f}x" if f and fs else "s3fs missing")
        fr = g.get("small_raw_get_fps")
        if f and fr:
            lines.append(f"- (small files cold against raw GETs of the same objects, before it: "
                         f"{f / fr:.2f})")
        if s == "granary-cluster":
            fa = r.get("granary", {}).get("small_cold_fps")
            check("small files cold >= standalone", None if not (f and fa) else f >= fa,
                  f"{f / fa:.2f}x" if f and fa else "standalone missing")
        fw, lfw = g.get("small_warm_fps"), loc.get("small_warm_fps")
        check("small files warm >= 0.6 of local", None if not (fw and lfw) else fw / lfw >= 0.6,
              f"{fw / lfw:.2f}" if fw and lfw else "no local figure")
        st, ls = g.get("stat_per_s"), loc.get("stat_per_s")
        check("stat >= 0.5 of local", None if not (st and ls) else st / ls >= 0.5,
              f"{st / ls:.2f}" if st and ls else "no local figure")
    return "\n".join(lines)


def chart(r, systems, path, cache_ratio):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = [s for s in systems if s != "local"]
    colors = {"granary": "#2a7ab0", "granary-cluster": "#55b0e0", "s3fs": "#d0803a",
              "rclone": "#8a5fb0", "local": "#777777"}
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2), gridspec_kw={"width_ratios": [2.3, 1, 1.3]})
    metrics = [("cold", "cold_mbps"), ("warm", "warm_mbps"), ("dataset>cache\nepoch 3", "big_e3_mbps"),
               ("small files\ncold", "small_cold_fps"), ("listing", "list_per_s"), ("stat", "stat_per_s")]
    ax = axes[0]
    width = 0.8 / max(1, len(peers))
    for i, s in enumerate(peers):
        vals = []
        for _, k in metrics:
            v, b = get(r, s, k), get(r, "local", k)
            vals.append(v / b if v and b else 0)
        xs = [j + (i - (len(peers) - 1) / 2) * width for j in range(len(metrics))]
        ax.bar(xs, vals, width, label=NAMES[s], color=colors.get(s))
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([m for m, _ in metrics])
    ax.set_ylabel("ratio to local disk (log scale; 1 = local)")
    ax.set_title("throughput and metadata rates, relative to local disk")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=len(peers))

    ax = axes[1]
    width = 0.8 / max(1, len(peers))
    for i, s in enumerate(peers):
        vals = [get(r, s, f"big_e{e}_hit") or 0 for e in (1, 2, 3)]
        xs = [j + (i - (len(peers) - 1) / 2) * width for j in range(3)]
        ax.bar(xs, vals, width, label=NAMES[s], color=colors.get(s))
        for x, v in zip(xs, vals):
            ax.annotate(hit(v), (x, v), xytext=(0, 3 if v > -0.05 else -9), textcoords="offset points",
                        ha="center", fontsize=6.5)
    ax.axhline(0.6, color="black", lw=0.8, ls="--")
    ax.set_xticks(range(3))
    ax.set_xticklabels(["epoch 1", "epoch 2", "epoch 3"])
    low = min([0.0] + [get(r, s, f"big_e{e}_hit") or 0 for s in peers for e in (1, 2, 3)])
    low = low if low < -0.05 else 0.0  # a few bytes of HTTP heads are not a miss
    ax.set_ylim(low - 0.15 if low < 0 else 0, 1.05)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel("hit ratio (1 - S3 bytes / bytes read)")
    ax.set_title(f"dataset > cache (cache = {cache_ratio} x dataset)")

    ax = axes[2]
    models = [(m, label) for m, label in ACCELS if any(get(r, s, f"accel_{m}_sustained") is not None
                                                       for s in systems)]
    width = 0.8 / max(1, len(systems))
    for i, s in enumerate(systems):
        vals = [get(r, s, f"accel_{m}_sustained") or 0 for m, _ in models]
        xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(models))]
        ax.bar(xs, vals, width, label=NAMES[s], color=colors.get(s))
        for x, v in zip(xs, vals):
            ax.annotate(fmt(v), (x, v), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=6.5)
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels([label for _, label in models])
    ax.set_ylabel("accelerators at utilisation >= 0.9")
    ax.set_title("accelerators sustained, page cache limited")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def insert(doc, md_path):
    with open(md_path) as f:
        body = f.read().strip("\n")
    with open(doc) as f:
        text = f.read()
    block = f"{BEGIN}\n{body}\n{END}"
    if BEGIN in text and END in text:
        pre, rest = text.split(BEGIN, 1)
        _, post = rest.split(END, 1)
        text = pre + block + post
    else:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{block}\n"
    with open(doc, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results")
    ap.add_argument("--out-md", required=True)
    ap.add_argument("--out-png")
    ap.add_argument("--machine", default="")
    ap.add_argument("--versions", default="")
    ap.add_argument("--command", default="")
    ap.add_argument("--settings", default="")
    ap.add_argument("--date", default="")
    ap.add_argument("--cache-ratio", default="0.66")
    ap.add_argument("--insert")
    a = ap.parse_args()
    if a.insert:
        insert(a.insert, a.out_md)
        return 0
    r = load(a.results)
    systems = [s for s in ORDER if s in r]
    md = [
        f"Measured {a.date} with `{a.command}`.",
        "",
        f"- machine: {a.machine}",
        "- versions: " + "; ".join(v for v in a.versions.splitlines() if v.strip()),
        f"- data and settings: {a.settings}",
        "",
        "Figures in parentheses are ratios to local disk, measured in the same run.",
        "",
        table(r, systems),
        "",
        accel_table(r, systems),
        "",
        "Goals of the issue, for Granary (ratios from this one run):",
        goals(r),
        "",
        "![Granary against s3fs, rclone and local disk](img/compare.png)",
    ]
    with open(a.out_md, "w") as f:
        f.write("\n".join(md) + "\n")
    if a.out_png:
        chart(r, systems, a.out_png, a.cache_ratio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
