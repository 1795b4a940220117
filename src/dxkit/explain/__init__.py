"""dxkit.explain: heatmaps of where a model looked, for every model kind.

``cam`` (Grad-CAM, Grad-CAM++, ScoreCAM through pytorch-grad-cam, raw units; occlusion in
``occlusion``) for 2-D and 3-D classifiers; ``volume`` for slice-stack exams (every slice of
every plane on one scale, the deciding slice), volume maps and segmenter probabilities;
``overlay`` for PNG overlays, montages and ``.npy`` maps; ``faithfulness`` for the deletion
check; ``run`` for ``dxkit explain``.
"""
