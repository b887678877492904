//! Kafka clients over the I/O seam: producer, consumer and admin.
