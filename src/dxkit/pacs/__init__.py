"""Studies in from a PACS, results back as DICOM into the same study.

- ``client.PacsClient``: DICOMweb (QIDO-RS, WADO-RS, STOW-RS via dicomweb-client) with
  retries and backoff; failures end as ``PacsError`` (exit 2) in plain words.
- ``rules.SeriesRules``: which series a model can read (modality, body part, planes,
  slice count, pixel spacing), carried by the checkpoint or derived from its kind.
- ``inference.PacsModel``: one model of any kind (classifier, segmenter, exam bundle) run
  through dxkit's own prediction paths on retrieved instances.
- ``run.run_study``: retrieve → pick series → infer → build (``dxkit.dicom_results``) →
  store, skipping studies this model version already reported on.
"""
