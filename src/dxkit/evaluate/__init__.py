"""dxkit.evaluate."""
