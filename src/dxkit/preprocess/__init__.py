"""dxkit.preprocess."""
