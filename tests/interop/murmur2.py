"""Kafka's default key partitioner, ported from the Java client.

`org.apache.kafka.common.utils.Utils.murmur2` with seed 0x9747b28c, and
`BuiltInPartitioner.partitionForKey`: `toPositive(murmur2(key)) % numPartitions`
where `toPositive(h) = h & 0x7fffffff`. librdkafka's `murmur2_random`
partitioner and kafka-python's DefaultPartitioner implement the same function
for non-null keys, so a record's partition is fully determined by its key.

Run this file directly to check the port against the Java client's own test
vectors (UtilsTest.testMurmur2).
"""

SEED = 0x9747B28C
M = 0x5BD1E995
R = 24
MASK32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Java `Utils.murmur2(byte[])`, returned as a signed 32-bit int like Java."""
    length = len(data)
    h = (SEED ^ length) & MASK32
    for i in range(length // 4):
        i4 = i * 4
        k = data[i4] | (data[i4 + 1] << 8) | (data[i4 + 2] << 16) | (data[i4 + 3] << 24)
        k = (k * M) & MASK32
        k ^= k >> R  # Java: k ^= k >>> r
        k = (k * M) & MASK32
        h = (h * M) & MASK32
        h ^= k
    tail = length & ~3
    extra = length % 4
    # Java's switch falls through: case 3, then 2, then 1.
    if extra == 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * M) & MASK32
    h ^= h >> 13
    h = (h * M) & MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """The partition Kafka's Java default partitioner picks for a non-null key."""
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions


# Kafka's clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java
JAVA_TEST_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


def self_test() -> None:
    for data, want in JAVA_TEST_VECTORS:
        got = murmur2(data)
        if got != want:
            raise AssertionError(f"murmur2({data!r}) = {got}, Java client says {want}")


if __name__ == "__main__":
    self_test()
    print(f"murmur2: {len(JAVA_TEST_VECTORS)} Java test vectors match")
