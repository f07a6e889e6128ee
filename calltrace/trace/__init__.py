"""The trace format: model, reader, writer (the raw runtime stream is calltrace.record's)."""
