"""Graph capture (torch.fx tracing), canonical views of the traced graph, and realization."""
