#!/usr/bin/env python3
"""Replication figures on three real local nodes (`faultline cluster --nodes
3`): a benchmark that prints numbers, not a test with a threshold.

1. Produce throughput with acks=1 and with acks=all, in the same run, on the
   same cluster: confluent-kafka (librdkafka) sends `--records` records of
   `--size` bytes to a fresh topic of 3 partitions, replication factor 3,
   min.insync.replicas=2, once per acks setting (alternating, `--rounds`
   times); the time is from the first produce() until flush() returns with
   every delivery report in. Printed: records/s and MB/s per setting, and the
   acks=all / acks=1 ratio.
2. Failover time: a producer (acks=all) sends one record every 5 ms to a
   1-partition topic (RF 3, min ISR 2); the partition's leader is SIGKILLed;
   the failover time is from the SIGKILL until the first record *sent after
   the SIGKILL* is acknowledged. Also printed: when a survivor's Metadata
   first named the new leader. The killed node is restarted before the next
   trial, whose topic is created afresh (so that its ISR holds all three).
   Measured for each `--session-timeouts` value (the cluster's
   `--broker-session-timeout-ms`, which bounds how soon the controller fences
   the dead node).

    python3 tests/interop/replication_bench.py --faultline target/release/faultline
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
import replication  # noqa: E402
from harness import Mismatch, say  # noqa: E402


def create(cluster, faultline, topic, partitions, workdir):
    cmd = [faultline, "topics", "create", "--bootstrap-server", cluster.alive_addrs(), "--topic", topic,
           "--partitions", str(partitions), "--replication-factor", "3", "--config", "min.insync.replicas=2"]
    code, _, err = harness.run_cmd(cmd, f"create-{topic}", workdir, 60)
    if code != 0:
        raise Mismatch(f"`{' '.join(cmd)}` exited {code}: {harness.tail(err, 10)}", [err])
    addr = cluster.alive_addrs().split(",")[0]

    def ready():
        md = replication.metadata(addr, topic)
        if not md or len(md[1]) != partitions:
            return None
        ok = all(l > 0 and len(i) == 3 for l, _, i in md[1].values())
        return md[1] if ok else None

    return replication.wait_for(f"{topic} with a full ISR", 60, ready, cluster.logs)


def throughput(cluster, topic, acks, records, size):
    from confluent_kafka import Producer

    errors = []
    p = Producer({
        "bootstrap.servers": cluster.bootstrap,
        "acks": acks,
        "linger.ms": 5,
        "batch.size": 1000000,
        "queue.buffering.max.messages": 1000000,
        "queue.buffering.max.kbytes": 1048576,
        "enable.idempotence": False,
        "delivery.report.only.error": True,
    })

    def dr(err, _msg):
        errors.append(err)

    # Connect and learn the leaders before the clock starts.
    p.list_topics(topic, timeout=30)
    value = b"x" * size
    start = time.monotonic()
    for i in range(records):
        while True:
            try:
                p.produce(topic, value=value, partition=i % 3, on_delivery=dr)
                break
            except BufferError:
                p.poll(0.01)
    left = p.flush(300)
    took = time.monotonic() - start
    if left or errors:
        raise Mismatch(f"acks={acks}: {left} undelivered, {len(errors)} failed ({errors[:3]})", cluster.logs)
    return took


def active_controller(cluster, faultline):
    """The quorum leader, from `faultline quorum` (DescribeQuorum)."""
    import subprocess

    out = subprocess.run([faultline, "quorum", "--bootstrap-server", cluster.alive_addrs()], capture_output=True,
                         timeout=30, stdin=subprocess.DEVNULL)
    for line in out.stdout.decode().splitlines():
        if line.startswith("LeaderId:"):
            return int(line.split()[1])
    return None


def failover_trial(cluster, faultline, topic, workdir):
    """Returns (killed node, whether it was the active controller, seconds
    until a record sent after the kill was acknowledged, seconds until
    Metadata named a new leader)."""
    from confluent_kafka import Producer

    parts = create(cluster, faultline, topic, 1, workdir)
    leader = parts[0][0]
    acks = []  # (send time, ack time) of delivered records
    errors = []
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 0,
                  "message.timeout.ms": 120000, "enable.idempotence": False})
    p.list_topics(topic, timeout=30)
    stop = threading.Event()
    killed = {}

    def dr(err, msg, sent_at):
        if err is None:
            acks.append((sent_at, time.monotonic()))
        else:
            errors.append(err)

    def run():
        while not stop.is_set():
            now = time.monotonic()
            p.produce(topic, value=b"failover", partition=0, on_delivery=lambda e, m, t=now: dr(e, m, t))
            p.poll(0.005)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(1.5)
    controller = active_controller(cluster, faultline)
    killed_at = cluster.kill(leader)
    killed["at"] = killed_at
    survivor = cluster.alive_addrs(exclude=(leader,)).split(",")[0]
    md_at = None
    deadline = killed_at + 120
    while time.monotonic() < deadline:
        if md_at is None:
            md = replication.metadata(survivor, topic, timeout=5)
            if md and 0 in md[1] and md[1][0][0] not in (-1, leader):
                md_at = time.monotonic()
        after = [a for s, a in list(acks) if s > killed_at]
        if after and md_at is not None:
            break
        time.sleep(0.05)
    stop.set()
    t.join(10)
    p.flush(30)
    after = [a for s, a in acks if s > killed_at]
    if not after:
        raise Mismatch(f"{topic}: no record sent after the SIGKILL of node {leader} was acknowledged within "
                       f"120s ({len(errors)} errors: {errors[:3]})", cluster.logs)
    return leader, controller == leader, min(after) - killed_at, (md_at - killed_at) if md_at else float("nan")


def run_cluster(args, session_ms, workdir, measure_throughput):
    replication.SESSION_TIMEOUT_MS = session_ms
    replication.HEARTBEAT_MS = max(1, min(2000, session_ms // 3))
    cluster = replication.Cluster(args.faultline, os.path.join(workdir, f"session-{session_ms}"), args.rust_log)
    os.makedirs(cluster.workdir, exist_ok=True)
    harness.ON_HANG.append(cluster.hard_stop)
    results = {}
    try:
        cluster.start()
        first = cluster.nodes[1].addr
        replication.wait_for("Metadata lists 3 brokers", 60,
                             lambda: (lambda md: md and len(md[0]) == 3)(replication.metadata(first)), cluster.logs)
        if measure_throughput:
            times = {"1": [], "all": []}
            for r in range(args.rounds):
                for acks in ("1", "all"):
                    topic = f"bench-acks-{acks}-{r}"
                    create(cluster, args.faultline, topic, 3, cluster.workdir)
                    took = throughput(cluster, topic, acks, args.records, args.size)
                    times[acks].append(took)
                    say(f"acks={acks:>3}: {args.records} records of {args.size} B in {took:.2f}s = "
                        f"{args.records / took:,.0f} records/s")
            results["throughput"] = times
        trials = []
        for i in range(args.failovers):
            victim, was_ctl, ack_s, md_s = failover_trial(cluster, args.faultline, f"bench-failover-{i}",
                                                          cluster.workdir)
            role = "the partition leader and the active controller" if was_ctl else "the partition leader"
            say(f"session timeout {session_ms} ms, trial {i + 1}: killed node {victim} ({role}); produce "
                f"acknowledged again after {ack_s:.2f}s, Metadata named the new leader after {md_s:.2f}s")
            trials.append((ack_s, md_s, was_ctl))
            cluster.restart(victim)
            replication.wait_for(f"node {victim} back", 60, lambda: (lambda md: md and len(md[0]) == 3)(
                replication.metadata(cluster.nodes[victim].addr)), cluster.logs)
            time.sleep(max(1.0, 2 * session_ms / 1000 / 3))
        results["failover"] = trials
    finally:
        cluster.stop()
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faultline", required=True, help="path to a built faultline binary")
    p.add_argument("--records", type=int, default=200000, help="records per throughput measurement")
    p.add_argument("--size", type=int, default=100, help="value bytes per record")
    p.add_argument("--rounds", type=int, default=2, help="throughput measurements per acks setting")
    p.add_argument("--failovers", type=int, default=3, help="failover trials per session timeout")
    p.add_argument("--session-timeouts", default="9000,3000",
                   help="broker session timeouts (ms) to measure failover with; the first cluster also "
                        "measures throughput")
    p.add_argument("--rust-log", default="info")
    p.add_argument("--workdir")
    args = p.parse_args()
    missing = replication.check_tools()
    if missing:
        print("replication-bench: missing: " + "; ".join(missing))
        return 77
    args.faultline = os.path.abspath(args.faultline)
    workdir = args.workdir or tempfile.mkdtemp(prefix="faultline-replication-bench-")
    all_results = {}
    try:
        for k, ms in enumerate(int(x) for x in args.session_timeouts.split(",")):
            all_results[ms] = run_cluster(args, ms, workdir, k == 0)
    except Mismatch as e:
        print(f"replication-bench: FAILED: {e}")
        for path in dict.fromkeys(e.logs):
            if path and os.path.exists(path):
                print(f"---- last lines of {path} ----\n{harness.tail(path)}")
        print(f"replication-bench: work dir kept: {workdir}")
        return 1
    print()
    print(f"replication-bench: 3 local nodes (faultline cluster), topic RF 3, min.insync.replicas=2, "
          f"confluent-kafka {__import__('confluent_kafka').libversion()[0]}")
    for ms, res in all_results.items():
        if "throughput" in res:
            t = res["throughput"]
            best = {a: min(v) for a, v in t.items()}
            mb = lambda s: args.records * args.size / 1e6 / s  # noqa: E731
            print(f"  produce throughput, {args.records} records x {args.size} B, 3 partitions, best of "
                  f"{args.rounds}:")
            for a in ("1", "all"):
                runs = ", ".join(f"{args.records / s:,.0f}" for s in t[a])
                print(f"    acks={a:<3} {args.records / best[a]:>10,.0f} records/s {mb(best[a]):>7.1f} MB/s"
                      f"   (each run: {runs} records/s)")
            print(f"    acks=all / acks=1 = {best['1'] / best['all']:.2f}")
        acks_s = [a for a, _, _ in res["failover"]]
        md_s = [m for _, m, _ in res["failover"]]
        each = ", ".join(f"{a:.2f}{' (controller too)' if c else ''}" for a, _, c in res["failover"])
        print(f"  failover, broker session timeout {ms} ms, {len(acks_s)} trials: SIGKILL of the leader until a "
              f"produce to its partition is acknowledged again: median {statistics.median(acks_s):.2f}s "
              f"(each: {each}); until Metadata names a new leader: median {statistics.median(md_s):.2f}s "
              f"(each: {', '.join(f'{x:.2f}' for x in md_s)})")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
