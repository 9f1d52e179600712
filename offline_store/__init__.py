"""The offline store: the Parquet dataset that is the source of truth, and point-in-time reads of it.

Its public API arrives with the streaming sinks (issue 3) and training-set retrieval (issue 4).
"""

__all__: list[str] = []
