"""dxkit.models."""
