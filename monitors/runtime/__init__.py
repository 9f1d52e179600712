"""The running monitor: windows per partition and their parts, the pipeline both Kafka engines drive, the
incidents a scored window leads to, and its Prometheus metrics."""
