"""kafka-python as a producer, consumer and admin client."""

import functools
import logging
import os
import time

from harness import Mismatch, say, watchdog

STEP_TIMEOUT = float(os.environ.get("FAULTLINE_INTEROP_STEP_TIMEOUT", "300"))

log = logging.getLogger("interop")


def _kafka():
    import kafka  # imported lazily so --check-tools can report it missing

    return kafka


def codec_available(codec):
    if codec == "none":
        return True
    import kafka.codec as c

    return {"gzip": c.has_gzip, "snappy": c.has_snappy, "lz4": c.has_lz4, "zstd": c.has_zstd}[codec]()


def guarded(what):
    """Run the decorated client step under a watchdog: kafka-python can block
    forever in some calls when a broker answers wrongly."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            topic = args[1] if len(args) > 1 else kwargs.get("topic")
            with watchdog(STEP_TIMEOUT, f"kafka-python {what} on topic {topic}",
                          kwargs.get("logs", ())):
                return fn(*args, **kwargs)
        return inner
    return wrap


def _bootstrap(client, timeout_ms=30000):
    """Fail fast with a clear error when the client cannot bootstrap."""
    if hasattr(client, "bootstrap"):  # kafka-python >= 3
        client.bootstrap(timeout_ms=timeout_ms)


def _common():
    """Settings shared by every kafka-python client. The broker version is
    probed with ApiVersions unless FAULTLINE_INTEROP_PY_API_VERSION (e.g.
    "2.8") pins it, which helps tell a version-probe problem from others."""
    pinned = os.environ.get("FAULTLINE_INTEROP_PY_API_VERSION")
    return {"api_version": tuple(int(x) for x in pinned.split("."))} if pinned else {}


def _producer_config(config):
    """Drop settings this kafka-python release does not know (2.0.x has no
    enable_idempotence or delivery_timeout_ms), instead of failing on them."""
    known = _kafka().KafkaProducer.DEFAULT_CONFIG
    dropped = [k for k in config if k not in known]
    if dropped:
        log.info("this kafka-python has no %s; not set", dropped)
    return {k: v for k, v in config.items() if k in known}


def _describe(exc):
    return f"{type(exc).__module__}.{type(exc).__name__}: {exc}"


@guarded("KafkaAdminClient.create_topics")
def create_topic(addr, topic, partitions, logs=()):
    kafka = _kafka()
    from kafka.admin import NewTopic

    admin = kafka.KafkaAdminClient(bootstrap_servers=addr, client_id="faultline-interop-admin",
                                   request_timeout_ms=30000, **_common())
    try:
        admin.create_topics([NewTopic(name=topic, num_partitions=partitions, replication_factor=1)])
    except Exception as e:
        raise Mismatch(f"kafka-python KafkaAdminClient.create_topics({topic!r}, "
                       f"{partitions} partitions) failed: {_describe(e)}", logs)
    finally:
        admin.close()


@guarded("metadata wait")
def wait_for_topic(addr, topic, partitions, timeout=60.0, logs=()):
    """Metadata must show the topic with exactly `partitions` partitions."""
    kafka = _kafka()
    consumer = kafka.KafkaConsumer(bootstrap_servers=addr, group_id=None,
                                   client_id="faultline-interop-metadata",
                                   enable_auto_commit=False, **_common())
    try:
        try:
            _bootstrap(consumer)
        except Exception as e:
            raise Mismatch(f"metadata for topic {topic!r}: kafka-python could not bootstrap from "
                           f"{addr}: {_describe(e)}", logs)
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            seen = consumer.partitions_for_topic(topic)
            if seen:
                break
            time.sleep(0.2)
        if seen != set(range(partitions)):
            raise Mismatch(f"metadata for topic {topic!r}: partitions {sorted(seen or [])}, "
                           f"expected {list(range(partitions))}", logs)
    finally:
        consumer.close()


@guarded("KafkaProducer")
def produce(addr, topic, records, codec, label, logs=(), timeout=300.0, **overrides):
    """Produce with KafkaProducer(acks='all', default partitioner, `overrides`)
    and return the acknowledged (partition, offset) of every record, in send
    order."""
    kafka = _kafka()
    config = dict(
        bootstrap_servers=addr,
        client_id=f"faultline-interop-{label}",
        acks="all",
        linger_ms=5,
        compression_type=None if codec == "none" else codec,
        **_common(),
    )
    config.update(overrides)
    log.info("=== %s: KafkaProducer(%s) ===", label, config)
    try:
        producer = kafka.KafkaProducer(**_producer_config(config))
    except Exception as e:
        raise Mismatch(f"{label}: KafkaProducer could not start: {_describe(e)}", logs)
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in records]
        producer.flush(timeout=timeout)
        acks, errors = [], []
        for i, f in enumerate(futures):
            try:
                md = f.get(timeout=1)
                acks.append((md.partition, md.offset))
            except Exception as e:
                errors.append((i, e))
                acks.append(None)
        if errors:
            i, e = errors[0]
            raise Mismatch(f"{label}: {len(errors)} of {len(records)} sends failed (acks='all', "
                           f"compression {codec}); first: record #{i}: {_describe(e)}", logs)
        return acks
    except Mismatch:
        raise
    except Exception as e:
        raise Mismatch(f"{label}: KafkaProducer failed: {_describe(e)}", logs)
    finally:
        producer.close(timeout=10)


@guarded("KafkaConsumer")
def consume(addr, topic, partitions, label, logs=(), idle_timeout_ms=20000):
    """assign() every partition, seek_to_beginning(), read up to the end
    offsets. Returns ([(partition, offset, key, value)], {partition: end})."""
    kafka = _kafka()
    from kafka import TopicPartition

    log.info("=== %s: KafkaConsumer on %s ===", label, topic)
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=addr,
        group_id=None,
        client_id=f"faultline-interop-{label}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=idle_timeout_ms,
        **_common(),
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        try:
            ends = consumer.end_offsets(tps, timeout_ms=30000)
        except Exception as e:
            raise Mismatch(f"{label}: end_offsets (ListOffsets latest) failed: {_describe(e)}", logs)
        ends = {tp.partition: off for tp, off in ends.items()}
        consumed = []
        done = lambda: all(consumer.position(tp) >= ends[tp.partition] for tp in tps)
        if not done():
            for msg in consumer:
                consumed.append((msg.partition, msg.offset, msg.key, msg.value))
                if msg.offset + 1 >= ends[msg.partition] and done():
                    break
        if not done():
            got = {tp.partition: consumer.position(tp) for tp in tps}
            raise Mismatch(f"{label}: KafkaConsumer stalled for {idle_timeout_ms} ms before "
                           f"reaching the end offsets: positions {got}, end offsets {ends}, "
                           f"{len(consumed)} records consumed", logs)
        return consumed, ends
    except Mismatch:
        raise
    except Exception as e:
        raise Mismatch(f"{label}: KafkaConsumer failed: {_describe(e)}", logs)
    finally:
        consumer.close()


@guarded("KafkaProducer with a SIGKILL")
def produce_until_killed(addr, topic, records, kill, ack_threshold, label, logs=()):
    """Stream `records` with acks='all' (no retries, so no duplicates) and
    call kill() -- SIGKILL of the broker -- as soon as `ack_threshold` records
    have been acknowledged, while more are in flight.

    Returns (sent, outcomes): sent = number of records handed to send();
    outcomes[i] = (partition, offset) if record i was acknowledged, else None."""
    kafka = _kafka()
    config = dict(
        bootstrap_servers=addr,
        client_id=f"faultline-interop-{label}",
        acks="all",
        enable_idempotence=False,
        retries=0,
        linger_ms=2,
        request_timeout_ms=5000,
        delivery_timeout_ms=10000,
        max_block_ms=10000,
        reconnect_backoff_ms=200,
        **_common(),
    )
    log.info("=== %s: KafkaProducer(%s) ===", label, config)
    outcomes = [None] * len(records)
    acked = [0]
    failed = [0]

    def on_ok(i):
        def cb(md):
            outcomes[i] = (md.partition, md.offset)
            acked[0] += 1
        return cb

    def on_err(i):
        def cb(_exc):
            failed[0] += 1
        return cb

    try:
        producer = kafka.KafkaProducer(**_producer_config(config))
    except Exception as e:
        raise Mismatch(f"{label}: KafkaProducer could not start: {_describe(e)}", logs)
    sent = 0
    killed = False
    try:
        for i, (k, v) in enumerate(records):
            producer.send(topic, key=k, value=v).add_callback(on_ok(i)).add_errback(on_err(i))
            sent += 1
            if failed[0]:
                raise Mismatch(f"{label}: a send failed before the broker was killed "
                               f"({acked[0]} acknowledged so far)", logs)
            if acked[0] >= ack_threshold:
                kill()
                killed = True
                break
        if not killed:
            # Everything was handed over before enough acks came back: wait for
            # the threshold, then kill whatever is still in flight.
            deadline = time.monotonic() + 120
            while acked[0] < ack_threshold and time.monotonic() < deadline and not failed[0]:
                time.sleep(0.001)
            if acked[0] < ack_threshold:
                raise Mismatch(f"{label}: only {acked[0]} of {sent} records acknowledged "
                               f"({failed[0]} failed) before the planned kill", logs)
            kill()
        in_flight_at_kill = sent - acked[0] - failed[0]
        try:
            producer.flush(timeout=60)
        except Exception as e:
            log.info("%s: flush after kill: %s", label, _describe(e))
    finally:
        try:
            producer.close(timeout=5)
        except Exception:
            pass
    say(f"{label}: sent {sent}, acknowledged {acked[0]} before/around the kill, "
        f"{in_flight_at_kill} unacknowledged in flight at the kill")
    return sent, outcomes
