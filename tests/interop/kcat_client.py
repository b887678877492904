"""kcat (librdkafka) as a producer and consumer."""

import re

from harness import Mismatch, find_kcat, run_cmd, tail

# librdkafka debug contexts kept in each kcat invocation's stderr log.
KCAT_DEBUG = "broker,protocol,msg"


def produce(addr, topic, records, codec, workdir, label, timeout=300.0, logs=()):
    """Produce keyed records with librdkafka's copy of Kafka's Java default
    partitioner (`murmur2_random`) and acks=all; fails unless every delivery
    report is a success."""
    kcat = find_kcat()
    data = bytearray()
    for key, value in records:
        if b":" in key or b"\n" in key + value:
            raise ValueError("kcat records must not contain ':' in keys or newlines")
        data += key + b":" + value + b"\n"
    cmd = [
        kcat, "-P", "-b", addr, "-t", topic,
        "-K", ":",
        "-X", "topic.partitioner=murmur2_random",
        "-X", "acks=all",
        "-X", "message.timeout.ms=120000",
        "-X", f"compression.codec={codec}",
        "-d", KCAT_DEBUG,
    ]
    code, _, err_path = run_cmd(cmd, label, workdir, timeout, stdin_data=bytes(data), logs=logs)
    if code != 0:
        raise Mismatch(
            f"{label}: kcat producer exited with status {code} (a delivery failed or the "
            f"producer could not start): {_first_error(err_path)}\n{_errors(err_path)}",
            [err_path, *logs],
        )


def consume(addr, topic, workdir, label, timeout=300.0, logs=()):
    """Read every partition from the beginning to the end (-e) in kcat's
    simple-consumer mode. Returns [(partition, offset, key, value)]."""
    kcat = find_kcat()
    cmd = [
        kcat, "-C", "-b", addr, "-t", topic,
        "-o", "beginning", "-e",
        "-f", "%p %o %k %s\n",
        "-d", KCAT_DEBUG,
    ]
    code, out, err_path = run_cmd(cmd, label, workdir, timeout, logs=logs)
    if code != 0:
        raise Mismatch(
            f"{label}: kcat consumer exited with status {code}: {_first_error(err_path)}\n"
            f"{_errors(err_path)}",
            [err_path, *logs],
        )
    consumed = []
    for n, line in enumerate(out.split(b"\n")):
        if not line:
            continue
        parts = line.split(b" ", 3)
        if len(parts) != 4:
            raise Mismatch(f"{label}: cannot parse kcat output line {n + 1}: {line[:200]!r}",
                           [err_path, *logs])
        consumed.append((int(parts[0]), int(parts[1]), parts[2], parts[3]))
    return consumed


def _first_error(err_path):
    """kcat's own error line ("% ERROR: ..."), or the last line it printed."""
    try:
        with open(err_path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return "(no stderr)"
    errs = [l for l in lines if l.startswith("% ERROR")]
    first = errs[0] if errs else (lines[-1] if lines else "(no stderr)")
    # With -d protocol, name the request the broker dropped the connection on.
    for i, l in enumerate(lines):
        if "Disconnected" in l and "|FAIL|" in l:
            sent = [m for m in lines[:i] if "|SEND|" in m and " Sent " in m]
            if sent:
                m = re.search(r"Sent (\w+) \((v\d+)", sent[-1])
                if m:
                    first += f" [last request before the broker closed the connection: " \
                             f"{m.group(1)} {m.group(2)}]"
            break
    return first


def _errors(err_path):
    """The error lines of a kcat stderr log, or its tail when there are none."""
    try:
        with open(err_path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return "(no stderr)"
    errs = [l for l in lines if "ERROR" in l or "fail" in l.lower() or "rror" in l]
    picked = (errs[:15] + (["..."] if len(errs) > 30 else []) + errs[-15:]) if len(errs) > 30 else errs
    return "\n".join(picked) if picked else tail(err_path, 30)
