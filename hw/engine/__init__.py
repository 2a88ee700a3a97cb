"""The NMP engine: analyzer, aggregation buffer, controller (DESIGN.md sections 3 to 5)."""
