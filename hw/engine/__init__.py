"""The NMP engine: analyzer, aggregation buffer, controller (docs/design.md sections 3 to 5)."""
