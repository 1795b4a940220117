"""dxkit.explain."""
