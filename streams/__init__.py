"""Everything that touches Kafka and the plant: settings, topics, the Faust worker, edge clients, the CLI."""
