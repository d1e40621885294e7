#!/usr/bin/env python3
# bench/report.py WORKDIR OUT ROUNDS - turn the per-workload report.csv
# files of bench/run-suite.sh and fio's JSON into docs/benchmarks.md: the
# machine, the exact commands, one table per workload (medians), and each
# target of issue 6 as met / missed with the measured ratio.  The profile
# notes (bench/profile.md, written by hand) are appended as they are.
import csv, json, os, platform, statistics, subprocess, sys, time

work, out, rounds = sys.argv[1], sys.argv[2], sys.argv[3]
here = os.path.dirname(os.path.abspath(__file__))


def load(name):
    path = os.path.join(work, "r-" + name, "report.csv")
    rows = {}
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for r in csv.DictReader(f):
            tgt = r["label"].rsplit("#", 1)[0]
            rows.setdefault(tgt, []).append(r)
    return rows


def med(rows, key):
    vals = [float(r[key]) for r in rows if r[key] not in ("", None)]
    return statistics.median(vals) if vals else 0.0


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except Exception:
        return "?"


lines = []
w = lines.append
w("# Benchmarks")
w("")
w("Written by `make bench` (bench/run-suite.sh) on %s; do not edit by hand "
  "(the profile notes at the end come from bench/profile.md)." %
  time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
w("")
w("## Machine")
w("")
w("- CPU: %s, %s cores; kernel %s" % (
    sh("lscpu | sed -n 's/^Model name: *//p'"), os.cpu_count(), platform.release()))
w("- memory: %s; disk: %s" % (sh("free -h | awk '/Mem:/{print $2}'"),
                               sh("df -h /var/tmp | awk 'NR==2{print $1\" \"$2}'")))
w("- brokers pinned to CPU 1, plexmq-bench to CPU 0 (taskset); loopback only")
w("- mosquitto %s (persistence false, log_dest none); librdkafka %s" % (
    sh("/usr/sbin/mosquitto -h | head -n 1 | awk '{print $3}'"),
    sh("pkg-config --modversion rdkafka")))
w("- %s rounds per workload, targets alternated A B A B; medians shown" % rounds)
w("")
w("Latency is end-to-end, from the message's *scheduled* send time (in its "
  "payload) to its arrival at a consumer; in flat-out runs it is mostly "
  "queueing in socket buffers and means little.  `lost` counts messages "
  "a consumer never got (QoS 0 drops included).  Broker CPU is utime+stime "
  "from /proc/PID/stat over the run, per delivered message.")
w("")

verdicts = []


def table(name, title, show_ack=False):
    rows = load(name)
    if not rows:
        w("### %s\n\n(no result: the workload failed)\n" % title)
        return rows
    w("### " + title)
    w("")
    hdr = "| target | msgs/s | MB/s | lost | dup | reord | p50 ms | p99 ms | p99.9 ms | max ms |"
    sep = "|---|---|---|---|---|---|---|---|---|---|"
    if show_ack:
        hdr += " ack p50 ms | ack p99 ms |"
        sep += "---|---|"
    hdr += " broker CPU us/msg | broker RSS MB | tool CPU s |"
    sep += "---|---|---|"
    w(hdr)
    w(sep)
    for tgt, rs in rows.items():
        line = "| %s | %.0f | %.1f | %.0f | %.0f | %.0f | %.3f | %.3f | %.3f | %.2f |" % (
            tgt, med(rs, "msgs_s"), med(rs, "mb_s"), med(rs, "lost"),
            med(rs, "dups"), med(rs, "reorders"), med(rs, "p50_ms"),
            med(rs, "p99_ms"), med(rs, "p999_ms"), med(rs, "max_ms"))
        if show_ack:
            line += " %.3f | %.3f |" % (med(rs, "ack_p50_ms"), med(rs, "ack_p99_ms"))
        line += " %.3f | %.0f | %.2f |" % (
            med(rs, "broker_cpu_us_msg"), med(rs, "broker_rss_peak_kb") / 1024,
            med(rs, "self_cpu_s"))
        w(line)
    errs = [r["error"] for rs in rows.values() for r in rs if r["error"]]
    if errs:
        w("")
        w("Errors: " + "; ".join(sorted(set(errs))))
    w("")
    return rows


def verdict(what, ok, detail):
    verdicts.append("| %s | %s | %s |" % (what, "met" if ok else "**missed**", detail))


w("## Results")
w("")
for name, title, ack in (
        ("fanin", "MQTT QoS 0 fan-in 4→1 (100 B, flat out, 3 s)", False),
        ("fanout", "MQTT QoS 0 fan-out 1→8 (100 B, flat out, 3 s)", False),
        ("qos1", "MQTT QoS 1 1→1, window 20 (100 B, 3 s)", True),
        ("qos1big", "MQTT QoS 1 1→1, window 20, 16 KiB (3 s)", True),
        ("latency", "MQTT QoS 0 1→1 at a fixed 10,000 msg/s (5 s)", False)):
    rows = table(name, title, ack)
    p, m = rows.get("plexmqd"), rows.get("mosquitto")
    if not p or not m:
        verdict(title, False, "not measured")
        continue
    pm, mm = med(p, "msgs_s"), med(m, "msgs_s")
    lossp = med(p, "lost")
    if name in ("fanin", "fanout", "qos1", "qos1big"):
        r = pm / mm if mm else 0
        verdict(title + ": msgs/s ≥ 1.5x", r >= 1.5 and lossp == 0,
                "%.0f vs %.0f msgs/s = %.2fx; plexmqd lost %.0f, mosquitto lost %.0f" %
                (pm, mm, r, lossp, med(m, "lost")))
    if name in ("fanin", "fanout"):
        pc, mc = med(p, "broker_cpu_us_msg"), med(m, "broker_cpu_us_msg")
        r = pc / mc if mc else 0
        verdict(title + ": CPU/msg ≤ 0.6x", 0 < r <= 0.6,
                "%.3f vs %.3f us/msg = %.2fx" % (pc, mc, r))
    if name == "latency":
        pp, mp = med(p, "p99_ms"), med(m, "p99_ms")
        verdict(title + ": p99 ≤ Mosquitto's", pp <= mp and lossp == 0,
                "%.3f vs %.3f ms (p50 %.3f vs %.3f)" % (pp, mp, med(p, "p50_ms"),
                                                        med(m, "p50_ms")))

rows = load("idle")
w("### 10,000 idle MQTT connections")
w("")
w("| target | connected | broker RSS after, MB | bytes per connection |")
w("|---|---|---|---|")
for tgt, rs in rows.items():
    w("| %s | %.0f | %.1f | %.0f |" % (tgt, med(rs, "idle_conns"),
                                      med(rs, "broker_rss_peak_kb") / 1024,
                                      med(rs, "idle_bytes_per_conn")))
w("")
if rows.get("plexmqd") and rows.get("mosquitto"):
    pb, mb = med(rows["plexmqd"], "idle_bytes_per_conn"), med(rows["mosquitto"], "idle_bytes_per_conn")
    verdict("10k idle connections: bytes/conn ≤ Mosquitto's", pb <= mb,
            "%.0f vs %.0f bytes = %.2fx" % (pb, mb, pb / mb if mb else 0))
else:
    verdict("10k idle connections", False, "not measured")

rows = table("kprod", "Kafka protocol produce: librdkafka, acks=1, linger.ms=5, 100 B, memory storage, 3M messages", True)
if rows.get("plexmqd-kafka"):
    rs = rows["plexmqd-kafka"]
    v = med(rs, "msgs_s")
    verdict("Kafka produce ≥ 1,000,000 msgs/s", v >= 1e6,
            "%.0f msgs/s (%.0f%%), produce p99 %.1f ms" % (v, v / 1e4, med(rs, "ack_p99_ms")))
rows = table("kcons", "Kafka protocol consume: one librdkafka consumer reads 3M records from the start (no group)", True)
if rows.get("plexmqd-kafka"):
    v = med(rows["plexmqd-kafka"], "msgs_s")
    verdict("Kafka consume ≥ 1,500,000 msgs/s", v >= 1.5e6, "%.0f msgs/s (%.0f%%)" % (v, v / 1.5e4))

w("### The same workload over each protocol (memory storage)")
w("")
w("1 producer, 1 consumer, every publish acknowledged (MQTT QoS 1, Kafka "
  "acks=1 with linger.ms=1, tcp `+OK`), at most 20 unacknowledged "
  "(MQTT, tcp; librdkafka batches instead), 20,000 msg/s, 100 B.")
w("")
table("proto", "Protocols side by side at 20,000 msg/s", True)

fio_bw = 0.0
try:
    with open(os.path.join(work, "fio.json")) as f:
        fio_bw = json.load(f)["jobs"][0]["write"]["bw_bytes"] / 1e6
except Exception:
    pass
rows = table("durable", "Durable: file storage, fsync=always, 4 producers → 1 consumer, 1 KiB, acknowledged, 4 s", True)
w("Disk group-commit bandwidth (fio, same run, same disk): **%.1f MB/s**." % fio_bw)
w("")
if rows and fio_bw > 0:
    for tgt, rs in rows.items():
        mbs = med(rs, "msgs_s") * 1024 / 1e6
        verdict("Durable over %s ≥ 0.5x fio" % tgt, mbs >= fio_bw / 2,
                "%.1f MB/s vs fio %.1f MB/s = %.2fx" % (mbs, fio_bw, mbs / fio_bw))
else:
    verdict("Durable ≥ 0.5x fio", False, "not measured")

w("## Targets (issue 6)")
w("")
w("| target | result | measured |")
w("|---|---|---|")
lines.extend(verdicts)
w("")
w("## Exact commands")
w("")
w("Each line ran with `taskset -c 0`, against brokers started with "
  "`taskset -c 1` by bench/run-suite.sh (plexmqd from the build tree; "
  "mosquitto with `persistence false`).  Ports and pids are the ones of "
  "that run.")
w("")
w("```")
with open(os.path.join(work, "commands.txt")) as f:
    lines.extend(l.rstrip("\n") for l in f)
w("```")
w("")
prof = os.path.join(here, "profile.md")
if os.path.exists(prof):
    with open(prof) as f:
        lines.append(f.read().rstrip("\n"))
with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
