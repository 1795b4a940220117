"""dxkit.models: the model zoo (``create_model``), slice-stack networks and plane fusion."""

from dxkit.models.registry import cam_target_layer, create_model, list_models

__all__ = ["cam_target_layer", "create_model", "list_models"]
