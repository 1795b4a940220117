"""dxkit.data.sources."""
