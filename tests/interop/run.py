#!/usr/bin/env python3
"""Real Kafka clients against `faultline serve`.

kcat (librdkafka) and kafka-python produce keyed records to 3-partition
topics, read them back, and check that every record is there, that each
partition holds its records in production order at offsets 0, 1, 2, ..., and
that each key sits in the partition Kafka's Java default partitioner
(murmur2) gives. Both consumers read both producers' topics. Then the broker
is killed with SIGKILL -- once in the middle of a stream of acks='all'
produces -- restarted on the same data directory, and every acknowledged
record must still be there, at the offset it was acknowledged at; new records
must append after the recovered ones.

Exit status: 0 all checks passed, 1 a check failed (the message says which,
and the tails of the broker's and the client's logs follow), 77 a client tool
is missing (kcat, or the kafka-python module or a compression codec module).

    python3 tests/interop/run.py                     # builds target/release/faultline
    python3 tests/interop/run.py --faultline PATH    # uses a built binary
    python3 tests/interop/run.py --check-tools       # only report missing tools
"""

import argparse
import logging
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
from harness import Broker, Mismatch, compare_logs, counts, say, total  # noqa: E402
import murmur2  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
EXIT_MISSING_TOOLS = 77
COMPRESSED = ["gzip", "snappy", "lz4", "zstd"]


def check_tools(require_all_codecs):
    """Return (missing: [str], notes: [str]). gzip is in the standard library;
    the other codecs are optional unless `require_all_codecs`."""
    missing, notes = [], []
    if not harness.find_kcat():
        missing.append("kcat (apt-get install kcat)")
    try:
        import kafka  # noqa: F401
        from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer  # noqa: F401
    except Exception as e:
        missing.append(f"python module kafka ({type(e).__name__}: {e}; "
                       f"pip install -r tests/interop/requirements.txt)")
        return missing, notes
    import py_client

    for codec in COMPRESSED:
        if not py_client.codec_available(codec):
            (missing if require_all_codecs else notes).append(
                f"kafka-python {codec} codec (pip install -r tests/interop/requirements.txt)")
    return missing, notes


class ClippedFormatter(logging.Formatter):
    """kafka-python's DEBUG lines carry whole requests (record bytes
    included); keep each line's head, enough to see the API, version and
    error codes, so the log stays a few MB."""

    LIMIT = 700

    def format(self, record):
        line = super().format(record)
        if len(line) > self.LIMIT:
            line = f"{line[:self.LIMIT]}... [{len(line) - self.LIMIT} more chars]"
        return line


def build_faultline():
    say("building faultline (cargo build --release --bin faultline)")
    subprocess.run(["cargo", "build", "--release", "--bin", "faultline"], cwd=REPO, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    return os.path.join(target, "release", "faultline")


class Run:
    def __init__(self, args, workdir):
        self.args = args
        self.workdir = workdir
        self.parts = args.partitions
        self.broker = Broker(args.faultline, os.path.join(workdir, "data"), workdir, args.rust_log)
        os.makedirs(self.broker.data_dir)
        self.py_log = os.path.join(workdir, "kafka-python.debug.log")
        # topic -> expected topic log ({partition: [(key, value), ...]})
        self.expected = {}
        self.summary = []
        self.failures = []
        self.py_codecs = [c for c in ["none", *COMPRESSED] if self._py_codec(c)]
        self.kcat_codecs = ["none", *COMPRESSED]  # librdkafka builds in all four

    def _py_codec(self, codec):
        import py_client

        return py_client.codec_available(codec)

    def py_can_read(self, topic):
        codec = topic.rsplit("-", 1)[-1]
        return codec not in COMPRESSED or self._py_codec(codec)

    def logs(self, *extra):
        return [*extra, *self.broker.logs, self.py_log]

    def check(self, fn, *args):
        """Run one check. A failed check is reported at once and the
        run goes on with the next one (the expected logs come from what was
        produced, not from earlier reads), so one run shows every broken
        check; up to --max-failures, then the run stops."""
        try:
            fn(*args)
        except Mismatch as e:
            self.failures.append(e)
            print(f"interop: CHECK FAILED: {e}", flush=True)
            if len(self.failures) >= self.args.max_failures:
                raise Mismatch(f"stopping after {self.failed_list()}", self.failures[0].logs)

    def failed_list(self):
        return (f"{len(self.failures)} failed check(s):\n"
                + "\n".join(f"  {i + 1}. {str(e).splitlines()[0]}"
                             for i, e in enumerate(self.failures)))

    # ---- steps ----------------------------------------------------------

    def create_topic(self, topic):
        import py_client

        cmd = [self.args.faultline, "topics", "create", "--bootstrap-server", self.broker.addr,
               "--topic", topic, "--partitions", str(self.parts)]
        code, out, err_path = harness.run_cmd(cmd, f"topics-create-{topic}", self.workdir, 60,
                                              logs=self.logs())
        if code == 0:
            how = "faultline topics create"
        else:
            say(f"WARNING: `{' '.join(cmd)}` exited with status {code} "
                f"({harness.tail(err_path, 3).strip()!r}); creating {topic} with kafka-python's "
                f"KafkaAdminClient instead")
            py_client.create_topic(self.broker.addr, topic, self.parts, self.logs(err_path))
            how = "KafkaAdminClient"
        py_client.wait_for_topic(self.broker.addr, topic, self.parts, logs=self.logs())
        say(f"created topic {topic} with {self.parts} partitions ({how})")

    def kcat_produce_and_check(self, codec, count):
        import kcat_client

        topic = f"interop-kcat-{codec}"
        self.create_topic(topic)
        records = harness.make_records(f"kcat-{codec}", count, max(1, count // 4))
        want = harness.expected_log(records, self.parts)
        kcat_client.produce(self.broker.addr, topic, records, codec, self.workdir,
                            f"kcat-produce-{codec}", logs=self.logs())
        self.expected[topic] = want
        self.check(self.verify_kcat, topic, f"kcat-consume-{codec}")
        self.summary.append(f"kcat {codec}: produced {count}, consumed {total(want)} "
                            f"(per partition {counts(want)})")

    def py_produce_and_check(self, codec, count, idempotent=False):
        """kafka-python >= 3 makes every producer idempotent by default
        (KIP-679), which needs InitProducerId and producer ids/sequences in
        Produce. That path gets its own topic (interop-py-idempotent, client
        defaults); the per-codec topics use enable_idempotence=False so that
        they test acks='all' delivery whatever the idempotence support."""
        import py_client

        name = "idempotent" if idempotent else codec
        topic = f"interop-py-{name}"
        self.create_topic(topic)
        label = f"py-produce-{name}"
        records = harness.make_records(f"py-{name}", count, max(1, count // 4))
        overrides = {} if idempotent else {"enable_idempotence": False}
        acks = py_client.produce(self.broker.addr, topic, records, codec, label, logs=self.logs(),
                                 **overrides)
        want = harness.log_from_acks(label, records, acks, self.parts, self.logs())
        # Acknowledged offsets equal the default partitioner's placement in send order.
        compare_logs(f"{label} (acks vs murmur2 placement)", want,
                     harness.expected_log(records, self.parts), self.logs())
        self.expected[topic] = want
        self.check(self.verify_py, topic, f"py-consume-{name}")
        what = "default (idempotent) producer" if idempotent else f"{codec}"
        self.summary.append(f"kafka-python {what}: produced {count} (all acknowledged), consumed "
                            f"{total(want)} (per partition {counts(want)})")

    def verify_kcat(self, topic, label):
        import kcat_client

        want = self.expected[topic]
        consumed = kcat_client.consume(self.broker.addr, topic, self.workdir, label,
                                       logs=self.logs())
        got = harness.group_consumed(label, consumed, self.parts, self.logs())
        compare_logs(f"{label} ({topic})", got, want, self.logs())
        say(f"{label}: {topic}: {len(consumed)} records, per partition {counts(got)}: OK")

    def verify_py(self, topic, label):
        import py_client

        want = self.expected[topic]
        consumed, ends = py_client.consume(self.broker.addr, topic, self.parts, label,
                                           logs=self.logs())
        want_ends = {p: len(want[p]) for p in range(self.parts)}
        if ends != want_ends:
            raise Mismatch(f"{label} ({topic}): end offsets (ListOffsets latest) {ends}, "
                           f"expected {want_ends}", self.logs())
        got = harness.group_consumed(label, consumed, self.parts, self.logs())
        compare_logs(f"{label} ({topic})", got, want, self.logs())
        say(f"{label}: {topic}: {len(consumed)} records, per partition {counts(got)}: OK")

    def crash_while_producing(self):
        """SIGKILL the broker while acks='all' produces are in flight."""
        import py_client

        topic = "interop-crash"
        self.create_topic(topic)
        self.crash_records = harness.make_records("crash", self.args.crash_records,
                                                  max(1, self.args.crash_records // 8))
        self.crash_sent, self.crash_outcomes = py_client.produce_until_killed(
            self.broker.addr, topic, self.crash_records, self.broker.kill,
            self.args.crash_ack_threshold, "py-produce-crash", logs=self.logs())

    def check_crash_topic(self):
        """After the restart: every acknowledged record is at its acknowledged
        offset; everything else present was really sent (an unacknowledged
        record may or may not have survived), in the default partitioner's
        partition, in send order, at contiguous offsets; nothing duplicated."""
        import py_client

        topic, label = "interop-crash", "py-consume-crash"
        consumed, ends = py_client.consume(self.broker.addr, topic, self.parts, label,
                                           logs=self.logs())
        got = harness.group_consumed(label, consumed, self.parts, self.logs())
        acked = {i: o for i, o in enumerate(self.crash_outcomes[:self.crash_sent]) if o}
        for i, (p, o) in acked.items():
            if o >= len(got[p]) or got[p][o] != self.crash_records[i]:
                have = harness._fmt(got[p][o]) if o < len(got[p]) else "nothing"
                raise Mismatch(
                    f"{label}: acknowledged record #{i} {harness._fmt(self.crash_records[i])} "
                    f"(acks='all', partition {p} offset {o}) did not survive SIGKILL + restart: "
                    f"partition {p} has {len(got[p])} records and {have} at offset {o}",
                    self.logs())
        index = {rec: i for i, rec in enumerate(self.crash_records[:self.crash_sent])}
        survived_unacked = 0
        for p in range(self.parts):
            last = -1
            for o, rec in enumerate(got[p]):
                i = index.get(rec)
                if i is None:
                    raise Mismatch(f"{label}: partition {p} offset {o} holds "
                                   f"{harness._fmt(rec)}, which was never sent", self.logs())
                want_p = murmur2.partition_for_key(rec[0], self.parts)
                if want_p != p:
                    raise Mismatch(f"{label}: record #{i} is in partition {p}, the default "
                                   f"partitioner gives {want_p}", self.logs())
                if i <= last:
                    raise Mismatch(f"{label}: partition {p} offset {o} holds record #{i} after "
                                   f"record #{last}: send order broken or duplicated", self.logs())
                last = i
                if i not in acked:
                    survived_unacked += 1
        self.expected[topic] = got
        self.summary.append(
            f"SIGKILL during produce: sent {self.crash_sent}, acknowledged {len(acked)}, all "
            f"{len(acked)} acknowledged survived; {survived_unacked} unacknowledged survived "
            f"(per partition {counts(got)})")
        say(f"{label}: {len(acked)} acknowledged records all present after restart, "
            f"{survived_unacked} unacknowledged records also present: OK")

    def append_after_recovery(self):
        """New writes must land after the recovered records, never over them."""
        import kcat_client
        import py_client

        n = self.args.append_records
        topic = "interop-kcat-none"
        records = harness.make_records("kcat-after-restart", n, max(1, n // 4))
        kcat_client.produce(self.broker.addr, topic, records, "none", self.workdir,
                            f"kcat-produce-after-restart-{self.broker.runs}", logs=self.logs())
        add = harness.expected_log(records, self.parts)
        for p in range(self.parts):
            self.expected[topic][p] = self.expected[topic][p] + add[p]

        topic = "interop-crash"
        if topic not in self.expected:
            return  # its check failed; nothing to append after
        label = f"py-produce-after-restart-{self.broker.runs}"
        records = harness.make_records(f"crash-after-restart-{self.broker.runs}", n, max(1, n // 4))
        acks = py_client.produce(self.broker.addr, topic, records, "gzip", label, logs=self.logs(),
                                 enable_idempotence=False)
        base = self.expected[topic]
        shifted = [(p, o - len(base[p])) for p, o in acks]
        add = harness.log_from_acks(f"{label} (offsets must continue after the recovered "
                                    f"end offsets {counts(base)})", records, shifted, self.parts,
                                    self.logs())
        for p in range(self.parts):
            base[p] = base[p] + add[p]
        self.summary.append(f"after restart {self.broker.runs - 1}: appended {n} records with "
                            f"kcat and {n} with kafka-python after the recovered offsets")

    # ---- the whole test -------------------------------------------------

    def run(self):
        a = self.args
        say(f"work dir {self.workdir}; faultline {a.faultline}; kafka-python codecs: "
            f"{', '.join(self.py_codecs)}")
        self.broker.start()

        say("--- run 1: kcat produce/consume ---")
        self.kcat_produce_and_check("none", a.records)
        for codec in COMPRESSED:
            self.kcat_produce_and_check(codec, a.codec_records)

        say("--- run 1: kafka-python produce/consume ---")
        self.check(self.py_produce_and_check, "none", a.idempotent_records, True)
        self.py_produce_and_check("none", a.records)
        for codec in self.py_codecs[1:]:
            self.py_produce_and_check(codec, a.codec_records)

        say("--- run 1: cross-reads (each client reads the other's topics) ---")
        for codec in self.kcat_codecs:
            if self._py_codec(codec):
                self.check(self.verify_py, f"interop-kcat-{codec}", f"py-consume-kcat-{codec}")
        for codec in self.py_codecs:
            self.check(self.verify_kcat, f"interop-py-{codec}", f"kcat-consume-py-{codec}")
        self.summary.append("cross-reads: kafka-python read kcat's topics and kcat read "
                            "kafka-python's topics: identical")

        say("--- run 1: SIGKILL while producing ---")
        self.crash_while_producing()

        say("--- run 2: restart on the same data dir ---")
        self.broker.start()
        self.check(self.check_crash_topic)
        for topic in sorted(self.expected):
            if topic != "interop-crash" and self.py_can_read(topic):
                self.check(self.verify_py, topic, f"py-consume-after-restart-{topic}")
        self.append_after_recovery()
        for topic in sorted(self.expected):
            self.check(self.verify_kcat, topic, f"kcat-consume-run2-{topic}")

        say("--- run 3: idle SIGKILL, restart, read everything again ---")
        self.broker.kill()
        self.broker.start()
        for topic in sorted(self.expected):
            self.check(self.verify_kcat, topic, f"kcat-consume-run3-{topic}")
            if self.py_can_read(topic):
                self.check(self.verify_py, topic, f"py-consume-run3-{topic}")
        n = sum(total(log) for log in self.expected.values())
        self.summary.append(f"after 2 SIGKILLs and 3 broker runs: {n} records in "
                            f"{len(self.expected)} topics read back identically by kcat and "
                            f"kafka-python")
        self.broker.stop()
        if self.failures:
            raise Mismatch(self.failed_list(), self.failures[0].logs)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faultline", help="path of the faultline binary (default: cargo build --release)")
    p.add_argument("--records", type=int, default=10000,
                   help="records per client on the uncompressed topic (default 10000)")
    p.add_argument("--codec-records", type=int, default=5000,
                   help="records per client on each compressed topic (default 5000)")
    p.add_argument("--idempotent-records", type=int, default=2000,
                   help="records kafka-python's default (idempotent) producer sends (default 2000)")
    p.add_argument("--crash-records", type=int, default=60000,
                   help="records queued for the SIGKILL-during-produce stream (default 60000)")
    p.add_argument("--crash-ack-threshold", type=int, default=4000,
                   help="kill the broker once this many of them are acknowledged (default 4000)")
    p.add_argument("--append-records", type=int, default=1000,
                   help="records each client appends after the restart (default 1000)")
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--max-failures", type=int, default=12,
                   help="stop after this many failed checks (default 12)")
    p.add_argument("--rust-log", default=os.environ.get("RUST_LOG", "info"),
                   help="RUST_LOG for the broker (default: $RUST_LOG or info)")
    p.add_argument("--workdir", help="directory for data and logs (default: a new temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir even on success")
    p.add_argument("--check-tools", action="store_true",
                   help="only check that kcat and kafka-python are installed")
    args = p.parse_args()

    require = os.environ.get("FAULTLINE_REQUIRE_INTEROP") == "1"
    missing, notes = check_tools(require_all_codecs=require)
    if args.check_tools:
        for n in notes:
            print(f"interop: optional tool missing, its checks will be skipped: {n}")
        if missing:
            print("interop: missing: " + "; ".join(missing))
            return EXIT_MISSING_TOOLS
        print(f"interop: tools present (kcat at {harness.find_kcat()})")
        return 0
    if missing:
        print("interop: SKIPPED: missing " + "; ".join(missing), flush=True)
        return EXIT_MISSING_TOOLS
    for n in notes:
        say(f"NOTE: skipping checks that need {n}")

    murmur2.self_test()
    if not args.faultline:
        args.faultline = build_faultline()
    args.faultline = os.path.abspath(args.faultline)

    workdir = args.workdir or tempfile.mkdtemp(prefix="faultline-interop-")
    os.makedirs(workdir, exist_ok=True)
    handler = logging.FileHandler(os.path.join(workdir, "kafka-python.debug.log"))
    handler.setFormatter(ClippedFormatter("%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s"))
    for name in ("kafka", "interop"):
        lg = logging.getLogger(name)
        lg.setLevel(logging.DEBUG)
        lg.addHandler(handler)
        lg.propagate = False

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    run = Run(args, workdir)
    harness.ON_HANG.append(run.broker.kill)
    harness.ON_HANG.append(lambda: print(f"interop: work dir kept for diagnosis: {workdir}"))
    started = time.monotonic()
    ok = False
    try:
        run.run()
        ok = True
    except Mismatch as e:
        print(f"\ninterop: FAILED: {e}", flush=True)
        for path in dict.fromkeys(e.logs):
            if path and os.path.exists(path):
                print(f"---- last lines of {path} ----\n{harness.tail(path)}", flush=True)
        for n in range(1, run.broker.runs + 1):
            path = os.path.join(workdir, f"broker-run{n}.stderr.log")
            problems = harness.problem_lines(path)
            if problems:
                print(f"---- ERROR/WARN lines of broker run {n} ({path}) ----\n{problems}",
                      flush=True)
    except BaseException as e:
        print(f"\ninterop: FAILED with an unexpected {type(e).__name__}:", flush=True)
        traceback.print_exc()
        for path in run.logs():
            if path and os.path.exists(path):
                print(f"---- last lines of {path} ----\n{harness.tail(path)}", flush=True)
        if not isinstance(e, Exception):
            run.broker.kill()
            raise
    finally:
        run.broker.stop()
    if ok:
        print("interop: results:")
        for line in run.summary:
            print(f"interop:   {line}")
        print(f"interop: PASSED in {time.monotonic() - started:.0f}s", flush=True)
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        return 0
    print(f"interop: FAILED after {time.monotonic() - started:.0f}s; "
          f"work dir kept for diagnosis: {workdir} (broker logs broker-run*.log, "
          f"kcat stderr *.stderr.log with -d {__import__('kcat_client').KCAT_DEBUG}, "
          f"kafka-python DEBUG log kafka-python.debug.log)", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
