"""The stream shell: processors that move records between Kafka, the pure core and the state.

Ingest, track, dead letters and the deadline punctuator receive what they may use from a
processor context; the checkpoint is the one commit protocol; the lifecycle holds the
rebalance handlers, the watchdogs and the one way to exit for a restart.
"""
