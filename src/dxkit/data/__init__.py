"""dxkit.data."""
