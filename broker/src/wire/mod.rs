//! Kafka wire framing and the advertised API version table.
