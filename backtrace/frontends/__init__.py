"""Front ends: turn a framework's model into a :class:`backtrace.ir.Graph`."""
