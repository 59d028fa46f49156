"""The local stack: Kafka, Cassandra, PostgreSQL and Prometheus run as plain processes owned by Tally.

Each service module knows how to install, configure, start and probe one service; ``runner`` brings
them up and down in order. Production runs the same services on Kubernetes (see deploy/k8s).
"""
