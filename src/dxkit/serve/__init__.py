"""dxkit.serve."""
