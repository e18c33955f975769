"""Pure encoders: log events in, one front door's wire bytes out (no I/O, no Flask)."""
