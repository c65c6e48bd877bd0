"""busgate: normalized, durable, signed events from legacy distribution services."""

__version__ = "0.1.0"
