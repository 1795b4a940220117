"""dxkit.train."""
