"""The one inference path: what computes a model's probabilities.

Checkpoint contract and loading (``checkpoint``, ``contract``), device and precision
(``device``), test-time augmentation and batching (``probabilities``), the decision rule and
its thresholds (``thresholds``, ``segment_decision``), the predictors of every model kind
(``predictor``, ``exam_model``/``exam_predict``, ``segment_model``/``segment_predict``),
ONNX export and its runtime (``export``, ``onnx_predictor``). Training fits thresholds and
calibration on these probabilities; evaluation, explanation, the server and the CLI serve
them, so what is reported is what is served.
"""
