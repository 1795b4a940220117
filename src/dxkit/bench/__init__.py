"""dxkit.bench."""
