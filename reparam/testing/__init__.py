"""Public test helpers: hypothesis strategies that build valid-by-construction modules."""
