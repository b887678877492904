"""Shared pieces of the interoperability test: the broker process, the work
directory, failure reporting and the record-log comparisons.

Every check that fails raises `Mismatch`; `run.py` turns that into a clear
message, the tails of the relevant logs and a non-zero exit status.
"""

import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

from murmur2 import partition_for_key


class Mismatch(Exception):
    """A check failed: the message says what was expected and what was seen.

    `logs` names the log files most useful for diagnosing it."""

    def __init__(self, message, logs=()):
        super().__init__(message)
        self.logs = list(logs)


_T0 = time.monotonic()


def say(msg):
    print(f"interop: [{time.monotonic() - _T0:6.1f}s] {msg}", flush=True)


def tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read().decode("utf-8", "replace").splitlines()
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(data[-lines:])


def problem_lines(path, limit=20):
    """The broker log's ERROR and WARN lines (first `limit` distinct ones,
    timestamps dropped): usually the API key and version that failed."""
    seen = {}
    try:
        with open(path, "rb") as f:
            for raw in f:
                line = ANSI_RE.sub("", raw.decode("utf-8", "replace")).rstrip()
                if " ERROR " in line or " WARN " in line:
                    key = line.split(" ", 1)[-1]
                    key = re.sub(r"conn=\d+ peer=\S+ ", "", key)
                    seen[key] = seen.get(key, 0) + 1
                    if len(seen) >= limit:
                        break
    except OSError:
        return ""
    return "\n".join(f"{k}{f'  (x{n})' if n > 1 else ''}" for k, n in seen.items())


# --------------------------------------------------------------------------
# The broker process

LISTENING_RE = re.compile(r"listening on (\S+:\d+)")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def _die_with_parent():
    """Make the broker die if the driver dies, so no broker outlives a test."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass


class Broker:
    """`faultline serve` on a loopback port, restartable on the same data dir."""

    def __init__(self, exe, data_dir, workdir, rust_log):
        self.exe = exe
        self.data_dir = data_dir
        self.workdir = workdir
        self.rust_log = rust_log
        self.proc = None
        self.addr = None
        self.runs = 0
        self.out_path = None
        self.err_path = None

    @property
    def logs(self):
        return [p for p in (self.err_path, self.out_path) if p]

    def start(self, timeout=60.0):
        self.runs += 1
        self.out_path = os.path.join(self.workdir, f"broker-run{self.runs}.stdout.log")
        self.err_path = os.path.join(self.workdir, f"broker-run{self.runs}.stderr.log")
        env = dict(os.environ)
        env["RUST_LOG"] = self.rust_log
        env["NO_COLOR"] = "1"
        env.setdefault("RUST_BACKTRACE", "1")
        cmd = [self.exe, "serve", "--data-dir", self.data_dir, "--listen", "127.0.0.1:0"]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while True:
            addr = self._find_listening()
            if addr:
                self.addr = addr
                say(f"broker run {self.runs} (pid {self.proc.pid}) listening on {addr}, "
                    f"data dir {self.data_dir}")
                return addr
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                raise Mismatch(
                    f"`{' '.join(cmd)}` exited with status {code} before printing "
                    f"'listening on ADDR' (run {self.runs})",
                    self.logs,
                )
            if time.monotonic() > deadline:
                self.kill()
                raise Mismatch(
                    f"`{' '.join(cmd)}` printed no 'listening on ADDR' line within "
                    f"{timeout:.0f}s (run {self.runs})",
                    self.logs,
                )
            time.sleep(0.05)

    def _find_listening(self):
        # The line is documented to go to stdout; stderr is scanned as well so
        # that a line emitted through the log subscriber is still found.
        for path in (self.out_path, self.err_path):
            try:
                with open(path, "rb") as f:
                    text = ANSI_RE.sub("", f.read(1 << 20).decode("utf-8", "replace"))
            except OSError:
                continue
            m = LISTENING_RE.search(text)
            if m:
                return m.group(1)
        return None

    def check_alive(self, what):
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise Mismatch(f"broker died during {what} (exit status {code})", self.logs)

    def kill(self):
        """SIGKILL: no shutdown hook runs, nothing is flushed by the broker."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        say(f"broker run {self.runs} killed with SIGKILL (status {self.proc.returncode})")
        self.proc = None
        self.addr = None

    def stop(self):
        """Best-effort shutdown at the end of the test."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def run_cmd(cmd, label, workdir, timeout, stdin_data=None, env=None, logs=()):
    """Run a client command, keeping its stderr in `workdir/<label>.stderr.log`.

    Returns (returncode, stdout bytes, stderr path)."""
    err_path = os.path.join(workdir, f"{label}.stderr.log")
    with open(err_path, "wb") as err:
        try:
            proc = subprocess.run(
                cmd,
                input=stdin_data if stdin_data is not None else b"",
                stdout=subprocess.PIPE,
                stderr=err,
                timeout=timeout,
                env=env,
            )
        except subprocess.TimeoutExpired:
            raise Mismatch(
                f"{label}: `{' '.join(cmd)}` did not finish within {timeout:.0f}s",
                [err_path, *logs],
            )
    return proc.returncode, proc.stdout, err_path


# --------------------------------------------------------------------------
# Records and logs
#
# A record is (key: bytes, value: bytes). A partition log is the list of
# records in offset order starting at offset 0. A topic log is
# {partition: [record, ...]} with every partition present.


def make_records(tag, count, distinct_keys):
    """`count` keyed records; keys repeat so that one key's records must stay
    together in one partition and in order; every value is unique."""
    recs = []
    for i in range(count):
        key = f"{tag}-key-{i % distinct_keys:05d}".encode()
        # Vary the value size (20..~300 bytes) so batches are not uniform.
        filler = "x" * ((i * 37) % 280)
        value = f"{tag}-{i:06d}-{filler}".encode()
        recs.append((key, value))
    return recs


def expected_log(records, num_partitions):
    """Where Kafka's default partitioner puts `records`, in production order."""
    log = {p: [] for p in range(num_partitions)}
    for rec in records:
        log[partition_for_key(rec[0], num_partitions)].append(rec)
    return log


def log_from_acks(label, records, acks, num_partitions, logs=()):
    """Turn per-record acknowledgements [(partition, offset)] into a topic log,
    checking each partition is the default partitioner's choice and the
    acknowledged offsets of each partition are 0, 1, 2, ... in send order."""
    log = {p: [] for p in range(num_partitions)}
    for i, (rec, (partition, offset)) in enumerate(zip(records, acks)):
        want = partition_for_key(rec[0], num_partitions)
        if partition != want:
            raise Mismatch(
                f"{label}: record #{i} key={rec[0]!r} was acknowledged in partition "
                f"{partition}, Kafka's default partitioner gives {want}",
                logs,
            )
        if offset != len(log[partition]):
            raise Mismatch(
                f"{label}: record #{i} key={rec[0]!r} was acknowledged at partition "
                f"{partition} offset {offset}, expected offset {len(log[partition])} "
                f"(acknowledged offsets must be contiguous from 0 in send order)",
                logs,
            )
        log[partition].append(rec)
    return log


def group_consumed(label, consumed, num_partitions, logs=()):
    """[(partition, offset, key, value)] -> topic log, checking that every
    partition holds offsets 0..n-1 exactly once."""
    by_part = collections.defaultdict(dict)
    for partition, offset, key, value in consumed:
        if partition < 0 or partition >= num_partitions:
            raise Mismatch(f"{label}: consumed a record from partition {partition}, the topic "
                           f"has {num_partitions} partitions", logs)
        if offset in by_part[partition]:
            raise Mismatch(f"{label}: partition {partition} offset {offset} was delivered twice",
                           logs)
        by_part[partition][offset] = (key, value)
    log = {}
    for p in range(num_partitions):
        offsets = sorted(by_part[p])
        for want, got in enumerate(offsets):
            if got != want:
                raise Mismatch(
                    f"{label}: partition {p} offsets are not contiguous from 0: offset "
                    f"{want} is missing (next consumed offset is {got}, "
                    f"{len(offsets)} records consumed)",
                    logs,
                )
        log[p] = [by_part[p][o] for o in offsets]
    return log


def compare_logs(label, got, want, logs=()):
    """Fail with a precise description unless `got` == `want`."""
    if got == want:
        return
    problems = []
    want_where = {}
    for p, recs in want.items():
        for o, rec in enumerate(recs):
            want_where[rec] = (p, o)
    got_where = {}
    for p, recs in got.items():
        for o, rec in enumerate(recs):
            got_where[rec] = (p, o)
    missing = [rec for rec in want_where if rec not in got_where]
    extra = [rec for rec in got_where if rec not in want_where]
    moved = [rec for rec in want_where if rec in got_where and got_where[rec][0] != want_where[rec][0]]
    if missing:
        problems.append(f"{len(missing)} record(s) missing, e.g. {_fmt(missing[0])} "
                        f"expected at partition/offset {want_where[missing[0]]}")
    if extra:
        problems.append(f"{len(extra)} unexpected record(s), e.g. {_fmt(extra[0])} "
                        f"at partition/offset {got_where[extra[0]]}")
    if moved:
        problems.append(f"{len(moved)} record(s) in the wrong partition, e.g. {_fmt(moved[0])} "
                        f"expected in partition {want_where[moved[0]][0]}, found at "
                        f"partition/offset {got_where[moved[0]]}")
    for p in sorted(want):
        g, w = got.get(p, []), want[p]
        if g != w:
            first = next((i for i in range(min(len(g), len(w))) if g[i] != w[i]), min(len(g), len(w)))
            gi = _fmt(g[first]) if first < len(g) else "end of partition"
            wi = _fmt(w[first]) if first < len(w) else "end of partition"
            problems.append(f"partition {p}: {len(g)} records, expected {len(w)}; first "
                            f"difference at offset {first}: got {gi}, expected {wi}")
    raise Mismatch(f"{label}: consumed log differs from the expected log:\n  - "
                   + "\n  - ".join(problems), logs)


def _fmt(rec):
    key, value = rec
    v = value if len(value) <= 40 else value[:40] + b"..."
    return f"(key={key!r}, value={v!r})"


def counts(log):
    return "/".join(str(len(log[p])) for p in sorted(log))


def total(log):
    return sum(len(r) for r in log.values())


def find_kcat():
    return shutil.which("kcat") or shutil.which("kafkacat")


# --------------------------------------------------------------------------
# Hang protection. Some client calls (kafka-python metadata look-ups, for
# one) can block forever against a broker that answers wrongly; every client
# step runs under a watchdog that reports the step and ends the run.

ON_HANG = []  # callables run (in order) before the process exits on a hang


class watchdog:
    def __init__(self, seconds, what, logs=()):
        self.seconds = seconds
        self.what = what
        self.logs = list(logs)
        self.timer = None

    def _fire(self):
        print(f"\ninterop: FAILED: {self.what} did not finish within {self.seconds:.0f}s "
              f"(client hung)", flush=True)
        for path in dict.fromkeys(self.logs):
            if path and os.path.exists(path):
                print(f"---- last lines of {path} ----\n{tail(path)}", flush=True)
        for hook in ON_HANG:
            try:
                hook()
            except Exception as e:
                print(f"interop: cleanup after hang: {e!r}", flush=True)
        sys.stdout.flush()
        os._exit(1)

    def __enter__(self):
        self.timer = threading.Timer(self.seconds, self._fire)
        self.timer.daemon = True
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        return False
