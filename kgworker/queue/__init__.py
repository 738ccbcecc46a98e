"""Redis side of the worker: connections, key names and one Lua script per state transition."""
