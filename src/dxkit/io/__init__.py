"""dxkit.io."""
