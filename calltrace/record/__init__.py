"""From the runtime's raw stream to a trace: reading the stream (raw.py),
naming its functions and decoding captured arguments (args.py) with
calltrace.symbols, and writing the JSON with calltrace.trace (convert.py).
A `calltrace run` keeps its raw streams in OUTPUT.raw/ (rawdir.py) and
converts and names them all at the end (collect.py)."""
