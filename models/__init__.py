"""Everything about the defect classifier, free of Kafka: network, data, training, checkpoints, engines."""
