"""The Kafka event log: the `EventLog` port on confluent-kafka (`events.kafka.log.KafkaLog`)."""
