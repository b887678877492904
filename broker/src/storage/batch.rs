//! Kafka record batch v2 (magic 2) headers: parse, validate the CRC-32C, and
//! rewrite the base offset in place. Batches are stored as received.
