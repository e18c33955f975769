"""Pure encoders of the front doors: log events in, wire bytes out (no I/O, no Flask, no gevent)."""
