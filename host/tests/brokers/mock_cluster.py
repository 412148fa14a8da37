"""A standalone Kafka-protocol broker for the host tests: librdkafka's mock cluster hosted by
Python's confluent-kafka, in a process of its own and at another librdkafka version than the
host links (2.16 against 2.12). Topics are created by their first produce (4 partitions), as on
a cluster with auto-creation; the group initial rebalance delay is the mock's 3 s, as on Kafka.

Prints the bootstrap servers on one line, then serves until stdin closes or it is killed.
Usage: mock_cluster.py [BROKERS]
"""

import sys

import confluent_kafka

brokers = int(sys.argv[1]) if len(sys.argv) > 1 else 3
owner = confluent_kafka.Producer(
    {"bootstrap.servers": "unused:9092", "test.mock.num.brokers": brokers}
)
metadata = owner.list_topics(timeout=10)
print(
    ",".join(f"{b.host}:{b.port}" for b in sorted(metadata.brokers.values(), key=lambda b: b.id)),
    flush=True,
)
# Until the test that started it closes its end (or dies).
sys.stdin.read()
