#!/usr/bin/env python3
"""Consumer groups with real Kafka clients against `faultline serve`.

- Two confluent-kafka (librdkafka) consumers share a 6-partition topic: the
  second member's join splits the partitions between them (the time from its
  subscribe until both hold disjoint assignments covering all six is printed
  as the rebalance time), every record is consumed at least once, and after
  one leaves the other holds every partition.
- A restarted consumer of the group resumes at the committed offsets: it
  reads exactly the records produced since, with no gap.
- The broker is killed with SIGKILL and restarted: the committed offsets
  read back are the last acknowledged commits.
- kcat -G (librdkafka's balanced consumer), kafka-python, aiokafka and
  kafkajs each consume the topic through a group of their own and commit;
  the committed offsets are read back.
- The same with the new consumer protocol (KIP-848, confluent-kafka with
  `group.protocol=consumer`, server-side assignment through
  ConsumerGroupHeartbeat): two members split the 6 partitions with no
  partition held by both, one closes and the other takes all 6, and a
  restarted member resumes at the committed offsets with no gap.

Exit status: 0 passed, 1 a check failed, 77 a client tool is missing
(confluent-kafka, kafka-python, aiokafka, kcat, node with kafkajs installed by
`npm ci` in tests/interop).

    python3 tests/interop/groups.py --faultline PATH [--steps kip848,...]
    python3 tests/interop/groups.py --check-tools
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import Broker, Mismatch, say, watchdog  # noqa: E402

EXIT_MISSING_TOOLS = 77
TOPIC = "group-events"
PARTITIONS = 6
FIRST_BATCH = 600  # records produced before the groups start, 100 a partition
SECOND_BATCH = 300


def check_tools(steps=None):
    """The tools the given steps (default: all) need that are missing."""
    steps = steps or set(Run.STEPS)
    missing = []
    modules = [("confluent_kafka", "confluent-kafka", True), ("kafka", "kafka-python", "kafka-python" in steps),
               ("aiokafka", "aiokafka", "aiokafka" in steps)]
    for module, pip, needed in modules:
        if not needed:
            continue
        try:
            __import__(module)
        except Exception as e:
            missing.append(f"python module {module} ({type(e).__name__}: {e}; pip install {pip})")
    if "kcat" in steps and not harness.find_kcat():
        missing.append("kcat (apt-get install kcat)")
    if "kafkajs" not in steps:
        pass
    elif not shutil.which("node"):
        missing.append("node (Node.js 18 or later)")
    elif not os.path.isdir(os.path.join(HERE, "node_modules", "kafkajs")):
        missing.append("kafkajs (npm ci --prefix tests/interop)")
    return missing


class Run:
    def __init__(self, args, workdir):
        self.workdir = workdir
        self.broker = Broker(args.faultline, os.path.join(workdir, "data"), workdir, args.rust_log)
        os.makedirs(self.broker.data_dir)
        self.summary = []
        # partition -> number of records produced so far
        self.produced = {p: 0 for p in range(PARTITIONS)}

    @property
    def addr(self):
        return self.broker.addr

    def logs(self, *extra):
        return [*extra, *self.broker.logs]

    # -------------------------------------------------------------- helpers

    def conf(self, **extra):
        c = {"bootstrap.servers": self.addr, "client.id": "faultline-groups"}
        c.update(extra)
        return c

    def consumer(self, group, name, protocol="classic"):
        from confluent_kafka import Consumer

        if protocol == "consumer":
            # KIP-848: no session timeout, heartbeat interval or assignor
            # strategy on the client; the broker decides them.
            return Consumer(self.conf(**{
                "group.id": group,
                "client.id": name,
                "group.protocol": "consumer",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }))
        return Consumer(self.conf(**{
            "group.id": group,
            "client.id": name,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            "partition.assignment.strategy": "range",
        }))

    def create_topic(self):
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient(self.conf())
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(30)

    def produce(self, per_partition):
        from confluent_kafka import Producer

        p = Producer(self.conf(**{"acks": "all"}))
        failures = []
        for part in range(PARTITIONS):
            for _ in range(per_partition):
                n = self.produced[part]
                p.produce(TOPIC, key=f"k{part}-{n}", value=f"v{part}-{n}", partition=part,
                          on_delivery=lambda err, _msg: err and failures.append(err))
                self.produced[part] += 1
        if p.flush(60) != 0 or failures:
            raise Mismatch(f"produce failed: {failures[:3]} ({p.flush(0)} undelivered)", self.logs())

    @staticmethod
    def owned(consumer):
        return {tp.partition for tp in consumer.assignment()}

    def poll_all(self, consumers, seen, until, timeout, what):
        """Poll every consumer in turn until `until()` holds; records go to
        `seen` as (partition, offset) -> consumer name."""
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                states = {name: sorted(self.owned(c)) for name, c in consumers}
                raise Mismatch(f"{what}: not done within {timeout:.0f}s (assignments {states}, "
                               f"{len(seen)} records seen)", self.logs())
            for name, c in consumers:
                m = c.poll(0.05)
                if m is not None and not m.error():
                    seen.setdefault((m.partition(), m.offset()), name)

    def commit_positions(self, consumer, label):
        from confluent_kafka import KafkaException

        try:
            consumer.commit(asynchronous=False)
        except KafkaException as e:
            # NO_OFFSET: nothing consumed since the last commit.
            if e.args[0].code() != -168:
                raise Mismatch(f"{label}: commit failed: {e}", self.logs())

    def committed(self, group):
        """The group's committed offsets, as confluent-kafka reads them (OffsetFetch)."""
        from confluent_kafka import TopicPartition

        c = self.consumer(group, "reader")
        try:
            tps = c.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=30)
        finally:
            c.close()
        return {tp.partition: tp.offset for tp in tps}

    # ---------------------------------------------------------------- steps

    def two_members(self):
        group = "cg-shared"
        c1 = self.consumer(group, "member-1")
        c1.subscribe([TOPIC])
        seen = {}
        with watchdog(120, "first member joins", self.logs()):
            self.poll_all([("member-1", c1)], seen, lambda: len(self.owned(c1)) == PARTITIONS, 60,
                          "the first member takes every partition")
        c2 = self.consumer(group, "member-2")
        started = time.monotonic()
        c2.subscribe([TOPIC])
        members = [("member-1", c1), ("member-2", c2)]

        def split():
            a, b = self.owned(c1), self.owned(c2)
            return a and b and not (a & b) and (a | b) == set(range(PARTITIONS))

        with watchdog(120, "second member joins", self.logs()):
            self.poll_all(members, seen, split, 60, "two members split the partitions")
        rebalance = time.monotonic() - started
        say(f"rebalance time (second member's subscribe until both hold disjoint assignments): "
            f"{rebalance:.2f}s; member-1 {sorted(self.owned(c1))}, member-2 {sorted(self.owned(c2))}")
        self.summary.append(f"confluent-kafka: second member joined, rebalance took {rebalance:.2f}s")
        with watchdog(120, "two members consume", self.logs()):
            self.poll_all(members, seen, lambda: len(seen) >= FIRST_BATCH, 60, "the group consumes every record")
        want = {(p, o) for p in range(PARTITIONS) for o in range(self.produced[p])}
        if set(seen) != want:
            raise Mismatch(f"the group consumed {len(seen)} records; missing "
                           f"{sorted(want - set(seen))[:10]}", self.logs())
        self.commit_positions(c1, "member-1")
        self.commit_positions(c2, "member-2")
        started = time.monotonic()
        with watchdog(60, "member-2 leaves", self.logs()):
            c2.close()  # LeaveGroup
            self.poll_all([("member-1", c1)], seen, lambda: len(self.owned(c1)) == PARTITIONS, 30,
                          "the remaining member takes every partition")
        took = time.monotonic() - started
        say(f"member-2 left; member-1 holds every partition after {took:.2f}s")
        self.summary.append(f"confluent-kafka: one member left, the other took all 6 partitions in {took:.2f}s")
        c1.close()
        committed = self.committed(group)
        if committed != self.produced:
            raise Mismatch(f"committed offsets {committed}, want {self.produced}", self.logs())
        self.summary.append(f"confluent-kafka: committed {committed}")
        return group

    def resume(self, group):
        before = dict(self.produced)
        self.produce(SECOND_BATCH // PARTITIONS)
        c = self.consumer(group, "member-restarted")
        c.subscribe([TOPIC])
        seen = {}
        with watchdog(120, "restarted consumer resumes", self.logs()):
            self.poll_all([("restarted", c)], seen, lambda: len(seen) >= SECOND_BATCH, 60,
                          "the restarted consumer reads the new records")
            # Anything before the committed offsets would show up now.
            self.poll_all([("restarted", c)], seen, lambda: True, 5, "drain")
            end = time.monotonic() + 2
            while time.monotonic() < end:
                m = c.poll(0.1)
                if m is not None and not m.error():
                    seen.setdefault((m.partition(), m.offset()), "restarted")
        want = {(p, o) for p in range(PARTITIONS) for o in range(before[p], self.produced[p])}
        if set(seen) != want:
            early = sorted(k for k in seen if k[1] < before[k[0]])
            raise Mismatch(f"restarted consumer read {len(seen)} records, want exactly the {len(want)} "
                           f"after the committed offsets; re-read {early[:5]}, missing "
                           f"{sorted(want - set(seen))[:5]}", self.logs())
        self.commit_positions(c, "restarted")
        c.close()
        say(f"restarted consumer resumed at the committed offsets {before} with no gap")
        self.summary.append("confluent-kafka: a restarted consumer resumed at the committed offsets, no gap, no re-read")

    def broker_restart(self, group):
        want = self.committed(group)
        self.broker.kill()
        self.broker.start()
        with watchdog(90, "committed offsets after a broker restart", self.logs()):
            got = self.committed(group)
        if got != want or got != self.produced:
            raise Mismatch(f"after SIGKILL and restart the committed offsets are {got}, "
                           f"want {want} (produced {self.produced})", self.logs())
        say(f"after SIGKILL and restart the committed offsets are the acknowledged ones: {got}")
        self.summary.append("broker SIGKILL + restart: committed offsets read back unchanged")

    def consumer_protocol(self):
        """KIP-848: two `group.protocol=consumer` members share the topic,
        never holding a partition both at once; one closes and the other
        takes every partition; a restarted member resumes at the commits."""
        group = "cg-kip848"
        c1 = self.consumer(group, "kip848-1", "consumer")
        c1.subscribe([TOPIC])
        seen = {}
        overlaps = []
        with watchdog(120, "KIP-848 first member joins", self.logs()):
            self.poll_all([("kip848-1", c1)], seen, lambda: len(self.owned(c1)) == PARTITIONS, 60,
                          "the first KIP-848 member takes every partition")
        c2 = self.consumer(group, "kip848-2", "consumer")
        started = time.monotonic()
        c2.subscribe([TOPIC])
        members = [("kip848-1", c1), ("kip848-2", c2)]

        def split():
            a, b = self.owned(c1), self.owned(c2)
            if a & b:
                overlaps.append(sorted(a & b))
            return a and b and not (a & b) and (a | b) == set(range(PARTITIONS))

        with watchdog(120, "KIP-848 second member joins", self.logs()):
            self.poll_all(members, seen, split, 60, "two KIP-848 members split the partitions")
        took = time.monotonic() - started
        if overlaps:
            raise Mismatch(f"KIP-848 members held partitions {overlaps[0]} at once", self.logs())
        say(f"KIP-848: second member's subscribe until disjoint assignments covering all: {took:.2f}s; "
            f"kip848-1 {sorted(self.owned(c1))}, kip848-2 {sorted(self.owned(c2))}")
        self.summary.append(f"confluent-kafka group.protocol=consumer: second member joined, assignment split in {took:.2f}s")
        with watchdog(120, "KIP-848 members consume", self.logs()):
            self.poll_all(members, seen, lambda: len(seen) >= sum(self.produced.values()), 60,
                          "the KIP-848 group consumes every record")
        self.commit_positions(c1, "kip848-1")
        self.commit_positions(c2, "kip848-2")
        started = time.monotonic()
        with watchdog(60, "KIP-848 member leaves", self.logs()):
            c2.close()  # ConsumerGroupHeartbeat with member epoch -1
            self.poll_all([("kip848-1", c1)], seen, lambda: len(self.owned(c1)) == PARTITIONS, 30,
                          "the remaining KIP-848 member takes every partition")
        took = time.monotonic() - started
        say(f"KIP-848: kip848-2 left; kip848-1 holds every partition after {took:.2f}s")
        self.summary.append(f"confluent-kafka group.protocol=consumer: one member left, the other took all 6 in {took:.2f}s")
        c1.close()
        committed = self.committed(group)
        if committed != self.produced:
            raise Mismatch(f"KIP-848 group committed {committed}, want {self.produced}", self.logs())
        before = dict(self.produced)
        self.produce(SECOND_BATCH // PARTITIONS)
        c = self.consumer(group, "kip848-restarted", "consumer")
        c.subscribe([TOPIC])
        seen = {}
        with watchdog(120, "KIP-848 restarted member resumes", self.logs()):
            self.poll_all([("restarted", c)], seen, lambda: len(seen) >= SECOND_BATCH, 60,
                          "the restarted KIP-848 member reads the new records")
            end = time.monotonic() + 2
            while time.monotonic() < end:
                m = c.poll(0.1)
                if m is not None and not m.error():
                    seen.setdefault((m.partition(), m.offset()), "restarted")
        want = {(p, o) for p in range(PARTITIONS) for o in range(before[p], self.produced[p])}
        if set(seen) != want:
            early = sorted(k for k in seen if k[1] < before[k[0]])
            raise Mismatch(f"restarted KIP-848 member read {len(seen)} records, want exactly {len(want)}; "
                           f"re-read {early[:5]}, missing {sorted(want - set(seen))[:5]}", self.logs())
        self.commit_positions(c, "kip848-restarted")
        c.close()
        committed = self.committed(group)
        if committed != self.produced:
            raise Mismatch(f"KIP-848 group committed {committed} after the restart, want {self.produced}",
                           self.logs())
        self.summary.append("confluent-kafka group.protocol=consumer: a restarted member resumed at the "
                            "committed offsets, no gap, no re-read")

    def kcat_group(self):
        group = "cg-kcat"
        total = sum(self.produced.values())
        cmd = [harness.find_kcat(), "-b", self.addr, "-G", group, "-o", "beginning", "-c", str(total),
               "-f", "%p %o\n", "-X", "enable.auto.commit=true", "-X", "auto.commit.interval.ms=200",
               "-X", "auto.offset.reset=earliest", TOPIC]
        code, out, err = harness.run_cmd(cmd, "kcat-group", self.workdir, 120, logs=self.logs())
        lines = [line for line in out.decode().splitlines() if line.strip()]
        if code != 0 or len(lines) != total:
            raise Mismatch(f"kcat -G exited {code} after {len(lines)} of {total} records", [err, *self.logs()])
        got = self.committed(group)
        if got != self.produced:
            raise Mismatch(f"kcat -G committed {got}, want {self.produced}", [err, *self.logs()])
        self.summary.append(f"kcat -G: consumed {total} records through a group, committed {got}")

    def kafka_python_group(self):
        from kafka import KafkaConsumer, TopicPartition

        group = "cg-kafka-python"
        total = sum(self.produced.values())
        with watchdog(120, "kafka-python group consumer", self.logs()):
            c = KafkaConsumer(TOPIC, bootstrap_servers=self.addr, group_id=group, auto_offset_reset="earliest",
                              enable_auto_commit=False, consumer_timeout_ms=30000)
            seen = set()
            for m in c:
                seen.add((m.partition, m.offset))
                if len(seen) >= total:
                    break
            c.commit()
            got = {p: c.committed(TopicPartition(TOPIC, p)) for p in range(PARTITIONS)}
            c.close()
        if len(seen) != total or got != self.produced:
            raise Mismatch(f"kafka-python read {len(seen)} of {total}, committed {got}", self.logs())
        self.summary.append(f"kafka-python: consumed {total} records through a group, committed {got}")

    def aiokafka_group(self):
        from aiokafka import AIOKafkaConsumer, TopicPartition

        group = "cg-aiokafka"
        total = sum(self.produced.values())

        async def consume():
            c = AIOKafkaConsumer(TOPIC, bootstrap_servers=self.addr, group_id=group,
                                 auto_offset_reset="earliest", enable_auto_commit=False)
            await c.start()
            seen = set()
            try:
                while len(seen) < total:
                    batch = await asyncio.wait_for(c.getmany(timeout_ms=1000), 60)
                    for msgs in batch.values():
                        seen.update((m.partition, m.offset) for m in msgs)
                await c.commit()
                got = {p: await c.committed(TopicPartition(TOPIC, p)) for p in range(PARTITIONS)}
            finally:
                await c.stop()
            return seen, got

        with watchdog(120, "aiokafka group consumer", self.logs()):
            seen, got = asyncio.run(consume())
        if len(seen) != total or got != self.produced:
            raise Mismatch(f"aiokafka read {len(seen)} of {total}, committed {got}", self.logs())
        self.summary.append(f"aiokafka: consumed {total} records through a group, committed {got}")

    def kafkajs_group(self):
        group = "cg-kafkajs"
        total = sum(self.produced.values())
        env = dict(os.environ, KAFKAJS_NO_PARTITIONER_WARNING="1")
        cmd = ["node", os.path.join(HERE, "kafkajs_group.js"), self.addr, TOPIC, group, str(total)]
        code, out, err = harness.run_cmd(cmd, "kafkajs-group", self.workdir, 120, env=env, logs=self.logs())
        if code != 0:
            raise Mismatch(f"kafkajs exited {code}: {harness.tail(err, 20)}", [err, *self.logs()])
        result = json.loads(out.decode().strip().splitlines()[-1])
        seen = {tuple(x) for x in result["consumed"]}
        got = {int(p): o for p, o in result["committed"].items()}
        if len(seen) != total or got != self.produced:
            raise Mismatch(f"kafkajs read {len(seen)} of {total}, committed {got}", [err, *self.logs()])
        self.summary.append(f"kafkajs: consumed {total} records through a group, committed {got}")

    STEPS = ["classic", "kip848", "kcat", "kafka-python", "aiokafka", "kafkajs"]

    def run(self, steps):
        self.broker.start()
        self.create_topic()
        self.produce(FIRST_BATCH // PARTITIONS)
        if "classic" in steps:
            group = self.two_members()
            self.resume(group)
            self.broker_restart(group)
        if "kip848" in steps:
            self.consumer_protocol()
        if "kcat" in steps:
            self.kcat_group()
        if "kafka-python" in steps:
            self.kafka_python_group()
        if "aiokafka" in steps:
            self.aiokafka_group()
        if "kafkajs" in steps:
            self.kafkajs_group()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faultline", help="path to a built faultline binary")
    p.add_argument("--rust-log", default=os.environ.get("RUST_LOG", "info"))
    p.add_argument("--workdir", help="directory for data and logs (default: a new temp dir)")
    p.add_argument("--check-tools", action="store_true", help="only check that the clients are installed")
    p.add_argument("--steps", default=",".join(Run.STEPS),
                   help=f"comma-separated steps to run (default: all of {','.join(Run.STEPS)})")
    args = p.parse_args()
    missing = check_tools(set(args.steps.split(",")))
    if args.check_tools or missing:
        if missing:
            print("interop-groups: missing: " + "; ".join(missing), flush=True)
            return EXIT_MISSING_TOOLS
        print("interop-groups: tools present", flush=True)
        return 0
    if not args.faultline:
        raise SystemExit("--faultline PATH is required")
    args.faultline = os.path.abspath(args.faultline)
    workdir = args.workdir or tempfile.mkdtemp(prefix="faultline-groups-")
    os.makedirs(workdir, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda signum, _f: (_ for _ in ()).throw(SystemExit(128 + signum)))
    run = Run(args, workdir)
    harness.ON_HANG.append(run.broker.kill)
    started = time.monotonic()
    ok = False
    try:
        run.run(set(args.steps.split(",")))
        ok = True
    except Mismatch as e:
        print(f"\ninterop-groups: FAILED: {e}", flush=True)
        for path in dict.fromkeys(e.logs):
            if path and os.path.exists(path):
                print(f"---- last lines of {path} ----\n{harness.tail(path)}", flush=True)
    except BaseException:
        print("\ninterop-groups: FAILED with an unexpected error:", flush=True)
        traceback.print_exc()
        for path in run.logs():
            if path and os.path.exists(path):
                print(f"---- last lines of {path} ----\n{harness.tail(path)}", flush=True)
    finally:
        run.broker.stop()
    if ok:
        for line in run.summary:
            print(f"interop-groups:   {line}")
        print(f"interop-groups: PASSED in {time.monotonic() - started:.0f}s", flush=True)
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        return 0
    print(f"interop-groups: work dir kept for diagnosis: {workdir}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
