#!/usr/bin/env python3
"""Replication with real Kafka clients against `faultline cluster --nodes 3`.

- Three broker+controller nodes start on free loopback ports (broker session
  timeout 3000 ms, heartbeats every 500 ms, so a dead node is fenced in about
  3 s); Metadata must list the three brokers.
- kcat (librdkafka, acks=all, not idempotent) streams numbered records into a
  3-partition topic of replication factor 3 and min.insync.replicas=2, one
  kcat per partition; each kcat's per-message delivery reports (`-v -v`) say
  which records were acknowledged at which offset. Mid-stream, the node
  leading partition 0 is SIGKILLed; the stream goes on until every partition
  has acknowledged records again. The topic is then read from the two
  survivors (`kcat -C -e`): every partition holds offsets 0..n-1 with no gap,
  every acknowledged record is at the offset it was acknowledged at, every
  partition holds the producer's records in send order, and a record appears
  twice only if it was in flight when the leader died (a retry of a
  non-idempotent producer; counted and printed).
- The killed node is restarted from its data directory. confluent-kafka's
  idempotent producers (`enable.idempotence=True`, acks=all), two of them,
  bootstrapped from different nodes, stream into a second such topic; the
  node leading its partition 0 is SIGKILLed mid-stream (two of three nodes
  stay up). Each producer's id (InitProducerId) is printed and must differ.
  Read back from the survivors: every value exactly once, every value whose
  delivery report carried no error present at its reported offset, each
  producer's values in send order in each partition.

Exit status: 0 passed, 1 a check failed, 77 a client tool is missing (kcat,
confluent-kafka).

    python3 tests/interop/replication.py --faultline PATH [--workdir DIR]
    python3 tests/interop/replication.py --check-tools
"""

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import Mismatch, say, watchdog  # noqa: E402

EXIT_MISSING_TOOLS = 77
PARTITIONS = 3
SESSION_TIMEOUT_MS = 3000
HEARTBEAT_MS = 500
KCAT_TOPIC = "replicated-kcat"
IDEM_TOPIC = "replicated-idempotent"

DELIVERED_RE = re.compile(r"Message delivered to partition (\d+) \(offset (-?\d+)\)")
FAILED_RE = re.compile(r"Delivery failed for message: (.*)")


def check_tools():
    missing = []
    try:
        import confluent_kafka  # noqa: F401
    except Exception as e:
        missing.append(f"python module confluent_kafka ({type(e).__name__}: {e}; pip install confluent-kafka)")
    if not harness.find_kcat():
        missing.append("kcat (apt-get install kcat)")
    return missing


# --------------------------------------------------------------------------
# The cluster

NODE_RE = re.compile(r"^node (\d+) roles (\S+) pid (\d+) address (\S+) log (.+)$")


def _alive(pid):
    """True while `pid` runs (a zombie, dead but not reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Node:
    def __init__(self, node_id, pid, addr, log):
        self.id = node_id
        self.pid = pid
        self.addr = addr
        self.log = log
        self.config = os.path.join(os.path.dirname(log), "server.toml")
        self.proc = None  # set when this test restarted the node itself
        self.runs = 1

    def alive(self):
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and _alive(self.pid)


class Cluster:
    """`faultline cluster --nodes 3`, with nodes killed and restarted by pid."""

    def __init__(self, exe, workdir, rust_log):
        self.exe = exe
        self.workdir = workdir
        self.data_dir = os.path.join(workdir, "cluster")
        self.rust_log = rust_log
        self.proc = None
        self.nodes = {}
        self.bootstrap = None
        self.out_path = os.path.join(workdir, "cluster.stdout.log")
        self.err_path = os.path.join(workdir, "cluster.stderr.log")

    @property
    def logs(self):
        return [n.log for n in self.nodes.values()] + [self.err_path]

    def env(self):
        env = dict(os.environ, RUST_LOG=self.rust_log, NO_COLOR="1")
        env.setdefault("RUST_BACKTRACE", "1")
        return env

    def start(self, timeout=60.0):
        cmd = [self.exe, "cluster", "--nodes", "3", "--data-dir", self.data_dir,
               "--broker-session-timeout-ms", str(SESSION_TIMEOUT_MS),
               "--broker-heartbeat-interval-ms", str(HEARTBEAT_MS)]
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                         env=self.env(), preexec_fn=harness._die_with_parent)
        lines = []

        def read():
            with open(self.out_path, "wb") as out:
                for raw in self.proc.stdout:
                    out.write(raw)
                    out.flush()
                    lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not any(l.startswith("bootstrap ") for l in list(lines)):
            if self.proc.poll() is not None:
                raise Mismatch(f"`{' '.join(cmd)}` exited with status {self.proc.returncode} before printing "
                               f"its nodes:\n" + "\n".join(lines), [self.err_path])
            if time.monotonic() > deadline:
                raise Mismatch(f"`{' '.join(cmd)}` printed no 'bootstrap' line within {timeout:.0f}s",
                               [self.err_path])
            time.sleep(0.05)
        for line in lines:
            m = NODE_RE.match(line)
            if m:
                node = Node(int(m.group(1)), int(m.group(3)), m.group(4), m.group(5))
                self.nodes[node.id] = node
            elif line.startswith("bootstrap "):
                self.bootstrap = line.split(" ", 1)[1]
        if sorted(self.nodes) != [1, 2, 3]:
            raise Mismatch(f"`faultline cluster` printed nodes {sorted(self.nodes)}, want [1, 2, 3]:\n"
                           + "\n".join(lines), [self.err_path])
        for n in self.nodes.values():
            say(f"node {n.id}: pid {n.pid}, {n.addr}, log {n.log}")

    def alive_addrs(self, exclude=()):
        return ",".join(n.addr for n in self.nodes.values() if n.alive() and n.id not in exclude)

    def kill(self, node_id):
        node = self.nodes[node_id]
        if node.proc is not None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait()
        else:
            os.kill(node.pid, signal.SIGKILL)
            end = time.monotonic() + 10
            while _alive(node.pid) and time.monotonic() < end:
                time.sleep(0.01)
        node.pid = None
        return time.monotonic()

    def restart(self, node_id):
        """Start the node again from its config and data, as `faultline
        serve --config`; its log goes to server.run<N>.log."""
        node = self.nodes[node_id]
        node.runs += 1
        node.log = os.path.join(os.path.dirname(node.config), f"server.run{node.runs}.log")
        with open(node.log, "wb") as err:
            node.proc = subprocess.Popen([self.exe, "serve", "--config", node.config], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err, env=self.env(),
                                         preexec_fn=harness._die_with_parent)
        node.pid = node.proc.pid
        say(f"node {node_id} restarted from {node.config}: pid {node.pid}, log {node.log}")

    def stop(self):
        """SIGTERM the cluster command (it stops the nodes it started), then
        SIGKILL whatever node is still up, by pid."""
        for node in self.nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for node in self.nodes.values():
            if node.proc is not None:
                try:
                    node.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()
            elif node.pid is not None and _alive(node.pid):
                os.kill(node.pid, signal.SIGKILL)

    def hard_stop(self):
        """On a hang: SIGKILL every node and the cluster command."""
        for node in self.nodes.values():
            if node.pid is not None and node.alive():
                os.kill(node.pid, signal.SIGKILL)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()


# --------------------------------------------------------------------------
# Metadata through kcat -L -J


def metadata(addr, topic=None, timeout=10):
    """One broker's Metadata as kcat prints it: ({broker id: address},
    {partition: (leader, replicas, isr)}), or None if it cannot be read."""
    cmd = [harness.find_kcat(), "-L", "-J", "-b", addr, "-m", "5"]
    if topic:
        cmd += ["-t", topic]
    try:
        out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        return None
    try:
        md = json.loads(out.stdout)
    except ValueError:
        return None
    brokers = {b["id"]: b["name"] for b in md.get("brokers", [])}
    parts = {}
    for t in md.get("topics", []):
        if t.get("topic") == topic and not t.get("error"):
            for p in t.get("partitions", []):
                parts[p["partition"]] = (p["leader"], sorted(r["id"] for r in p.get("replicas", [])),
                                         sorted(r["id"] for r in p.get("isrs", [])))
    return brokers, parts


def wait_for(what, timeout, fn, logs):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        got = fn()
        if got:
            return got
        last = got
        if time.monotonic() > deadline:
            raise Mismatch(f"{what}: not within {timeout:.0f}s (last seen: {last!r})", logs)
        time.sleep(0.2)


# --------------------------------------------------------------------------
# The kcat stream


class KcatStream:
    """One kcat producer for one partition (-p), fed records on stdin; its
    delivery reports (-v -v) arrive in message order and map each
    acknowledged record to its offset."""

    def __init__(self, cluster, topic, partition, workdir):
        self.partition = partition
        self.err_path = os.path.join(workdir, f"kcat-produce-p{partition}.stderr.log")
        cmd = [harness.find_kcat(), "-P", "-b", cluster.bootstrap, "-t", topic, "-p", str(partition),
               "-v", "-v",
               "-X", "acks=all",
               "-X", "enable.idempotence=false",
               "-X", "max.in.flight.requests.per.connection=1",
               "-X", "message.timeout.ms=60000",
               "-X", "linger.ms=5",
               "-X", "topic.metadata.refresh.interval.ms=1000",
               "-d", "topic,broker"]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.sent = []          # values, in send order
        self.sent_at = []       # monotonic time each was written
        self.reports = []       # (offset or None, error text or None, monotonic time) in order
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        with open(self.err_path, "wb") as log:
            for raw in self.proc.stderr:
                log.write(raw)
                line = raw.decode("utf-8", "replace")
                m = DELIVERED_RE.search(line)
                if m:
                    with self.lock:
                        self.reports.append((int(m.group(2)), None, time.monotonic(), int(m.group(1))))
                    continue
                m = FAILED_RE.search(line)
                if m:
                    with self.lock:
                        self.reports.append((None, m.group(1).strip(), time.monotonic(), None))

    def send(self, value):
        self.sent.append(value)
        self.sent_at.append(time.monotonic())
        self.proc.stdin.write(value + b"\n")
        self.proc.stdin.flush()

    def acked(self):
        with self.lock:
            return sum(1 for r in self.reports if r[0] is not None)

    def acked_since(self, t):
        with self.lock:
            return sum(1 for r in self.reports if r[0] is not None and r[2] > t)

    def close(self, timeout):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Mismatch(f"kcat producer for partition {self.partition} did not finish within "
                           f"{timeout:.0f}s of its input's end", [self.err_path])
        self.reader.join(10)
        return self.proc.returncode


# --------------------------------------------------------------------------


class Run:
    def __init__(self, args, workdir):
        self.args = args
        self.workdir = workdir
        self.cluster = Cluster(args.faultline, workdir, args.rust_log)
        self.summary = []
        self.client_logs = []

    def logs(self, *extra):
        return [*extra, *self.client_logs, *self.cluster.logs]

    def create_topic(self, topic):
        cmd = [self.args.faultline, "topics", "create", "--bootstrap-server", self.cluster.alive_addrs(),
               "--topic", topic, "--partitions", str(PARTITIONS), "--replication-factor", "3",
               "--config", "min.insync.replicas=2"]
        code, out, err = harness.run_cmd(cmd, f"create-{topic}", self.workdir, 60, logs=self.logs())
        if code != 0:
            raise Mismatch(f"`{' '.join(cmd)}` exited {code}: {harness.tail(err, 10)}", self.logs(err))
        addr = self.cluster.alive_addrs().split(",")[0]

        def ready():
            md = metadata(addr, topic)
            if not md or len(md[1]) != PARTITIONS:
                return None
            parts = md[1]
            ok = all(l in (1, 2, 3) and r == [1, 2, 3] and i == [1, 2, 3] for l, r, i in parts.values())
            return parts if ok else None

        parts = wait_for(f"topic {topic}: {PARTITIONS} partitions, each with a leader and replicas = ISR = "
                         f"[1, 2, 3]", 30, ready, self.logs())
        say(f"topic {topic} created: " + ", ".join(f"p{p} leader {l} isr {i}" for p, (l, _, i) in sorted(parts.items())))
        return parts

    def leader_after_kill(self, topic, partition, dead, timeout=60):
        """Polls a survivor's Metadata until `partition` has a leader other
        than `dead`; returns (leader, isr, seconds waited)."""
        start = time.monotonic()
        addr = self.cluster.alive_addrs(exclude=(dead,)).split(",")[0]

        def moved():
            md = metadata(addr, topic)
            if md and partition in md[1] and md[1][partition][0] not in (-1, dead):
                return md[1][partition]
            return None

        leader, _, isr = wait_for(f"{topic} partition {partition}: a new leader after node {dead} was killed",
                                  timeout, moved, self.logs())
        return leader, isr, time.monotonic() - start

    # -------------------------------------------------------------- kcat

    def kcat_phase(self):
        parts = self.create_topic(KCAT_TOPIC)
        victim = parts[0][0]
        streams = [KcatStream(self.cluster, KCAT_TOPIC, p, self.workdir) for p in range(PARTITIONS)]
        self.client_logs += [s.err_path for s in streams]
        kill_after = self.args.kcat_kill_after
        after_kill = self.args.kcat_after_kill
        killed_at = None
        n = 0
        interval = 1.0 / self.args.kcat_rate
        next_send = time.monotonic()
        deadline = time.monotonic() + 120
        new_leader = None
        with watchdog(240, "kcat stream across a leader SIGKILL", self.logs()):
            while True:
                now = time.monotonic()
                if now > deadline:
                    raise Mismatch(f"kcat stream: not done within 120s: acknowledged per partition "
                                   f"{[s.acked() for s in streams]}, since the kill "
                                   f"{[s.acked_since(killed_at) if killed_at else 0 for s in streams]}",
                                   self.logs())
                if now < next_send:
                    time.sleep(next_send - now)
                next_send += interval
                for s in streams:
                    s.send(f"kcat-p{s.partition}-{len(s.sent):06d}".encode())
                n += 1
                for s in streams:
                    if s.proc.poll() is not None:
                        raise Mismatch(f"kcat producer for partition {s.partition} exited early with status "
                                       f"{s.proc.returncode}", self.logs(s.err_path))
                if killed_at is None and streams[0].acked() >= kill_after:
                    acked = [s.acked() for s in streams]
                    killed_at = self.cluster.kill(victim)
                    say(f"SIGKILL node {victim} (leader of {KCAT_TOPIC} partition 0) after "
                        f"{acked} acknowledged records per partition, {n} sent to each")
                    new_leader = threading.Thread(target=lambda: self._note_leader(KCAT_TOPIC, victim, killed_at),
                                                  daemon=True)
                    new_leader.start()
                if killed_at is not None and all(s.acked_since(killed_at) >= after_kill for s in streams):
                    break
        statuses = [s.close(90) for s in streams]
        if new_leader is not None:
            new_leader.join(60)
        self.check_kcat_topic(streams, victim, killed_at, statuses)
        return victim

    def _note_leader(self, topic, dead, killed_at):
        try:
            leader, isr, _ = self.leader_after_kill(topic, 0, dead)
            self.failover = (leader, isr, time.monotonic() - killed_at)
            say(f"{topic} partition 0: node {leader} leads with ISR {isr}, seen in Metadata "
                f"{self.failover[2]:.2f}s after the SIGKILL")
        except Mismatch as e:
            self.failover = e

    def consume_kcat(self, topic, addrs, label):
        kcat = harness.find_kcat()
        cmd = [kcat, "-C", "-b", addrs, "-t", topic, "-o", "beginning", "-e", "-f", "%p %o %s\n",
               "-d", "topic,fetch"]
        code, out, err = harness.run_cmd(cmd, label, self.workdir, 120, logs=self.logs())
        if code != 0:
            raise Mismatch(f"{label}: kcat consumer exited {code}: {harness.tail(err, 10)}", self.logs(err))
        consumed = []
        for line in out.split(b"\n"):
            if line:
                p, o, v = line.split(b" ", 2)
                consumed.append((int(p), int(o), b"", v))
        log = harness.group_consumed(label, consumed, PARTITIONS, self.logs(err))
        return {p: [v for _, v in recs] for p, recs in log.items()}

    def check_kcat_topic(self, streams, victim, killed_at, statuses):
        survivors = self.cluster.alive_addrs()
        got = self.consume_kcat(KCAT_TOPIC, survivors, "kcat-consume-survivors")
        total_acked = total_dups = total_failed = 0
        details = []
        for s in streams:
            p = s.partition
            log = got[p]
            if len(s.reports) != len(s.sent):
                raise Mismatch(f"kcat partition {p}: {len(s.sent)} records sent but {len(s.reports)} delivery "
                               f"reports parsed from {s.err_path}", self.logs())
            index = {v: i for i, v in enumerate(s.sent)}
            # Acknowledged records, at the offsets acknowledged, in send order.
            last_offset = -1
            failed = []
            for i, (offset, error, _, rp) in enumerate(s.reports):
                if offset is None:
                    failed.append((i, error))
                    continue
                if rp != p or offset <= last_offset:
                    raise Mismatch(f"kcat partition {p}: delivery report #{i} says partition {rp} offset "
                                   f"{offset} after offset {last_offset}: reports are not in message order",
                                   self.logs())
                last_offset = offset
                if offset >= len(log):
                    raise Mismatch(f"kcat partition {p}: record #{i} {s.sent[i]!r} was acknowledged (acks=all) "
                                   f"at offset {offset}, but the survivors' partition {p} ends at offset "
                                   f"{len(log)}: an acknowledged record is lost", self.logs())
                if log[offset] != s.sent[i]:
                    raise Mismatch(f"kcat partition {p}: record #{i} {s.sent[i]!r} was acknowledged (acks=all) "
                                   f"at offset {offset}, but the survivors hold {log[offset]!r} there",
                                   self.logs())
            # Nothing foreign; first occurrences in send order; a duplicate
            # only of a record in flight at the kill.
            seen = set()
            last = -1
            dups = []
            for o, v in enumerate(log):
                if v not in index:
                    raise Mismatch(f"kcat partition {p}: offset {o} holds {v!r}, which was never sent to "
                                   f"partition {p}", self.logs())
                i = index[v]
                if v in seen:
                    dups.append((o, i))
                    continue
                if i < last:
                    raise Mismatch(f"kcat partition {p}: offset {o} holds record #{i} after record #{last}: "
                                   f"the producer's order is not kept", self.logs())
                seen.add(v)
                last = i
            in_flight = {i for i, t in enumerate(s.sent_at) if t <= killed_at and
                         (s.reports[i][2] > killed_at)}
            bad = [(o, i) for o, i in dups if i not in in_flight]
            if bad:
                o, i = bad[0]
                raise Mismatch(f"kcat partition {p}: record #{i} {s.sent[i]!r} appears twice (again at offset "
                               f"{o}) but was not in flight when node {victim} was killed", self.logs())
            acked = sum(1 for r in s.reports if r[0] is not None)
            total_acked += acked
            total_dups += len(dups)
            total_failed += len(failed)
            if statuses[p] != 0 and not failed:
                raise Mismatch(f"kcat partition {p}: exited {statuses[p]} with no failed delivery report",
                               self.logs(s.err_path))
            details.append(f"p{p}: {len(s.sent)} sent, {acked} acknowledged, {len(log)} consumed at offsets "
                           f"0..{len(log) - 1}" + (f", {len(dups)} retried duplicate(s) of in-flight records"
                                                   if dups else "")
                           + (f", {len(failed)} failed ({failed[0][1]})" if failed else ""))
        say("PASS kcat acks=all across a leader SIGKILL: " + "; ".join(details))
        back = [r[2] for r in streams[0].reports if r[0] is not None and r[2] > killed_at]
        if back:
            stalled = sum(1 for i, t in enumerate(streams[0].sent_at) if t <= killed_at < streams[0].reports[i][2])
            say(f"partition 0: first acknowledgement after the SIGKILL came {back[0] - killed_at:.2f}s after it "
                f"({stalled} records were waiting at the kill)")
        fo = getattr(self, "failover", None)
        fo_text = f"; Metadata named node {fo[0]} leader of partition 0 {fo[2]:.2f}s after the SIGKILL" \
            if isinstance(fo, tuple) else ""
        self.summary.append(f"kcat (acks=all, 3 partitions, RF 3, min ISR 2): {total_acked} acknowledged records "
                            f"all read back from the 2 survivors at their acknowledged offsets, offsets "
                            f"contiguous, send order kept; {total_dups} duplicate(s) from retries of records in "
                            f"flight at the SIGKILL, {total_failed} failed deliveries{fo_text}")
        if isinstance(fo, Mismatch):
            raise fo

    # ------------------------------------------------------- idempotent

    def idempotent_phase(self, restarted):
        from confluent_kafka import Producer

        self.cluster.restart(restarted)
        addr = self.cluster.nodes[restarted].addr
        wait_for(f"node {restarted} back in Metadata after its restart", 60,
                 lambda: (lambda md: md and len(md[0]) == 3)(metadata(addr)), self.logs())
        # The restarted node must be unfenced before a topic can place a replica on it.
        parts = wait_for(f"{IDEM_TOPIC} created with every replica in the ISR", 60,
                         lambda: self._try_create(IDEM_TOPIC), self.logs())
        # Kill a leader other than the restarted node, so that the restarted
        # node is one of the two survivors the producers must fail over to.
        target = next(p for p, (l, _, _) in sorted(parts.items()) if l != restarted)
        victim = parts[target][0]
        others = [n for n in sorted(self.cluster.nodes) if n != victim]
        pids = {}
        producers = []
        log_paths = []
        for k, boot in enumerate(others):
            name = f"idem-{k}"
            path = os.path.join(self.workdir, f"confluent-{name}.log")
            log_paths.append(path)
            logger = _file_logger(name, path)
            conf = {
                "bootstrap.servers": self.cluster.nodes[boot].addr,
                "client.id": name,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 60000,
                "topic.metadata.refresh.interval.ms": 1000,
                "debug": "eos,topic",
            }
            producers.append((name, boot, Producer(conf, logger=logger)))
        self.client_logs += log_paths
        sent = {name: {p: [] for p in range(PARTITIONS)} for name, _, _ in producers}
        outcome = {}  # value -> (partition, offset) or error string
        lock = threading.Lock()

        def on_delivery(err, msg):
            with lock:
                outcome[msg.value()] = (msg.partition(), msg.offset(), time.monotonic()) if err is None \
                    else str(err)

        def acked(partition, since=None):
            with lock:
                return sum(1 for o in outcome.values() if isinstance(o, tuple) and o[0] == partition
                           and (since is None or o[2] > since))

        interval = 1.0 / self.args.idem_rate
        killed_at = None
        deadline = time.monotonic() + 120
        next_send = time.monotonic()
        n = 0
        with watchdog(240, "idempotent producers across a leader SIGKILL", self.logs()):
            while True:
                now = time.monotonic()
                if now > deadline:
                    raise Mismatch(f"idempotent producers: not done within 120s; acknowledged per partition "
                                   f"{[acked(p) for p in range(PARTITIONS)]}", self.logs())
                if now < next_send:
                    time.sleep(next_send - now)
                next_send += interval
                for name, _, prod in producers:
                    for p in range(PARTITIONS):
                        v = f"{name}-p{p}-{len(sent[name][p]):06d}".encode()
                        sent[name][p].append(v)
                        prod.produce(IDEM_TOPIC, value=v, partition=p, on_delivery=on_delivery)
                    prod.poll(0)
                n += 1
                if killed_at is None and acked(target) >= self.args.idem_kill_after:
                    killed_at = self.cluster.kill(victim)
                    say(f"SIGKILL node {victim} (leader of {IDEM_TOPIC} partition {target}) after "
                        f"{[acked(p) for p in range(PARTITIONS)]} acknowledged records per partition")
                if killed_at is not None and all(acked(p, killed_at) >= self.args.idem_after_kill
                                                 for p in range(PARTITIONS)):
                    break
            for name, _, prod in producers:
                left = prod.flush(90)
                if left:
                    raise Mismatch(f"{name}: {left} records still undelivered 90s after the stream ended",
                                   self.logs())
        for (name, _, _), path in zip(producers, log_paths):
            # librdkafka (debug=eos): "<addr>/<id>: Acquiring ProducerId", then
            # "Acquired PID{Id:N,Epoch:E}".
            broker = None
            for line in open(path, errors="replace"):
                m = re.search(r"/(\d+): Acquiring ProducerId", line)
                if m:
                    broker = int(m.group(1))
                m = re.search(r"Acquired PID\{Id:(-?\d+),Epoch:(-?\d+)\}", line)
                if m:
                    pids.setdefault(name, []).append((int(m.group(1)), int(m.group(2)), broker))
        leader, isr, _ = self.leader_after_kill(IDEM_TOPIC, target, victim)
        self.check_idempotent(producers, sent, outcome, victim, pids, leader, target)

    def _try_create(self, topic):
        try:
            return self.create_topic(topic)
        except Mismatch as e:
            say(f"not yet: {str(e).splitlines()[0]}")
            return None

    def check_idempotent(self, producers, sent, outcome, victim, pids, leader, target):
        got = self.consume_kcat(IDEM_TOPIC, self.cluster.alive_addrs(), "kcat-consume-idempotent")
        where = {}
        for p, values in got.items():
            for o, v in enumerate(values):
                if v in where:
                    q, o2 = where[v]
                    raise Mismatch(f"idempotent producer: {v!r} appears twice, at partition {q} offset {o2} "
                                   f"and partition {p} offset {o} (producer ids seen: {pids or 'not logged'})",
                                   self.logs())
                where[v] = (p, o)
        all_sent = {v for by_p in sent.values() for vs in by_p.values() for v in vs}
        foreign = [v for v in where if v not in all_sent]
        if foreign:
            raise Mismatch(f"idempotent topic holds {len(foreign)} value(s) never sent, e.g. {foreign[0]!r}",
                           self.logs())
        delivered = failed = 0
        errors = collections.Counter()
        for v in all_sent:
            o = outcome.get(v)
            if o is None:
                raise Mismatch(f"idempotent producer: no delivery report for {v!r} after flush", self.logs())
            if isinstance(o, str):
                failed += 1
                errors[o] += 1
                continue
            delivered += 1
            if v not in where:
                raise Mismatch(f"idempotent producer: {v!r} was delivered (acks=all, partition {o[0]} offset "
                               f"{o[1]}) but the survivors do not hold it: an acknowledged record is lost "
                               f"(producer ids seen: {pids or 'not logged'})", self.logs())
            if where[v] != (o[0], o[1]):
                raise Mismatch(f"idempotent producer: {v!r} was acknowledged at partition {o[0]} offset {o[1]}, "
                               f"the survivors hold it at partition {where[v][0]} offset {where[v][1]}",
                               self.logs())
        for name, by_p in sent.items():
            for p, values in by_p.items():
                offsets = [where[v][1] for v in values if v in where]
                if offsets != sorted(offsets):
                    i = next(k for k in range(1, len(offsets)) if offsets[k] < offsets[k - 1])
                    raise Mismatch(f"idempotent producer {name}: partition {p} holds its records out of send "
                                   f"order (offset {offsets[i]} after {offsets[i - 1]})", self.logs())
        ids = {name: ", ".join(f"{pid} epoch {epoch} from node {broker}" for pid, epoch, broker in v)
               for name, v in pids.items()}
        if len(ids) != len(producers):
            raise Mismatch(f"no 'Acquired PID' line in the librdkafka log of every producer: {ids}", self.logs())
        flat = [pid for v in pids.values() for pid, _, _ in v]
        if len(flat) != len(set(flat)):
            raise Mismatch(f"idempotent producers were given the same producer id: {ids}", self.logs())
        total = sum(len(v) for v in got.values())
        err_text = f", {failed} failed ({dict(errors)})" if failed else ""
        say(f"PASS idempotent producers across a leader SIGKILL: {len(all_sent)} sent, {delivered} delivered"
            f"{err_text}; {total} consumed from the survivors, each value exactly once; producer ids {ids}")
        self.summary.append(f"confluent-kafka idempotent (2 producers, acks=all): node {victim} (leader of "
                            f"partition {target}) SIGKILLed, node {leader} took over; {delivered} of {len(all_sent)} "
                            f"delivered{err_text}, all read back once at their offsets, no duplicate, per-producer "
                            f"order kept; producer ids {ids}")

    def run(self):
        self.cluster.start()
        first = self.cluster.nodes[1].addr
        wait_for("Metadata lists 3 brokers", 60, lambda: (lambda md: md and len(md[0]) == 3)(metadata(first)),
                 self.logs())
        say(f"cluster ready: {self.cluster.bootstrap}")
        victim = self.kcat_phase()
        self.idempotent_phase(victim)


def _file_logger(name, path):
    import logging

    logger = logging.getLogger(f"replication.{name}")
    logger.setLevel(logging.DEBUG)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    return logger


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faultline", help="path to a built faultline binary")
    p.add_argument("--rust-log", default=os.environ.get("RUST_LOG", "info"))
    p.add_argument("--workdir", help="directory for data and logs (default: a new temp dir)")
    p.add_argument("--check-tools", action="store_true", help="only check that the clients are installed")
    p.add_argument("--kcat-rate", type=float, default=200.0, help="records a second to each partition (kcat)")
    p.add_argument("--kcat-kill-after", type=int, default=300,
                   help="SIGKILL partition 0's leader once this many of its kcat records are acknowledged")
    p.add_argument("--kcat-after-kill", type=int, default=300,
                   help="records each partition must acknowledge after the SIGKILL before the stream ends")
    p.add_argument("--idem-rate", type=float, default=100.0,
                   help="records a second each idempotent producer sends to each partition")
    p.add_argument("--idem-kill-after", type=int, default=300)
    p.add_argument("--idem-after-kill", type=int, default=300)
    args = p.parse_args()
    missing = check_tools()
    if args.check_tools or missing:
        if missing:
            print("interop-replication: missing: " + "; ".join(missing), flush=True)
            return EXIT_MISSING_TOOLS
        print("interop-replication: tools present", flush=True)
        return 0
    if not args.faultline:
        raise SystemExit("--faultline PATH is required")
    args.faultline = os.path.abspath(args.faultline)
    workdir = args.workdir or tempfile.mkdtemp(prefix="faultline-replication-")
    os.makedirs(workdir, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda signum, _f: (_ for _ in ()).throw(SystemExit(128 + signum)))
    run = Run(args, workdir)
    harness.ON_HANG.append(run.cluster.hard_stop)
    started = time.monotonic()
    ok = False
    try:
        run.run()
        ok = True
    except Mismatch as e:
        print(f"\ninterop-replication: FAIL: {e}", flush=True)
        for path in dict.fromkeys(e.logs):
            if path and os.path.exists(path):
                print(f"---- last lines of {path} ----\n{harness.tail(path)}", flush=True)
    except BaseException:
        print("\ninterop-replication: FAIL with an unexpected error:", flush=True)
        traceback.print_exc()
        for path in run.logs():
            if path and os.path.exists(path):
                print(f"---- last lines of {path} ----\n{harness.tail(path)}", flush=True)
    finally:
        run.cluster.stop()
    if ok:
        for line in run.summary:
            print(f"interop-replication:   {line}")
        print(f"interop-replication: PASSED in {time.monotonic() - started:.0f}s", flush=True)
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        return 0
    print(f"interop-replication: work dir kept for diagnosis: {workdir}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
