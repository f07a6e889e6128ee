"""`calltrace attach PID`: record a running process (docs/ATTACH.md)."""
