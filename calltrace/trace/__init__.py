"""The trace format: model, reader, writer, and the raw runtime stream."""
