"""A predicted mask as a binary DICOM Segmentation (highdicom) on its source image.

Empty frames are kept (``omit_empty_frames=False``) so a negative image round-trips to an
all-zero mask instead of a SEG without frames.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dxkit import __version__
from dxkit.dicom_results.identity import MANUFACTURER, ModelIdentity, result_uid
from dxkit.dicom_results.report import PRIVATE_SCHEME
from dxkit.dicom_results.sources import DicomOutputError, SourceRefs

SERIES_NUMBER = 9903
# Findings with a SNOMED CT code; others get a private code under PRIVATE_SCHEME.
KNOWN_FINDINGS = {"pneumothorax": ("36118008", "Pneumothorax")}


def _property_type(hd: Any, finding: str) -> Any:
    value, meaning = KNOWN_FINDINGS.get(finding.lower(), (f"F-{finding}"[:16], finding))
    scheme = "SCT" if finding.lower() in KNOWN_FINDINGS else PRIVATE_SCHEME
    return hd.sr.CodedConcept(value, scheme, meaning[:64])


def build_segmentation(
    hd: Any, refs: SourceRefs, index: int, mask: np.ndarray, finding: str, identity: ModelIdentity
) -> Any:
    """A SEG of ``mask`` (``(H, W)``, 0/1, the size of ``refs.headers[index]``)."""
    from pydicom.sr.codedict import codes

    source = refs.headers[index]
    rows, cols = int(source.Rows), int(source.Columns)
    if mask.shape != (rows, cols):
        raise DicomOutputError(
            f"the mask is {mask.shape[0]}×{mask.shape[1]} but its source image is "
            f"{rows}×{cols}; a DICOM SEG must match its source image"
        )
    algorithm = hd.AlgorithmIdentificationSequence(
        name=identity.name[:64],
        family=codes.cid7162.ArtificialIntelligence,
        version=identity.version[:64],
        parameters={"sha256": identity.sha256},
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=finding[:64],
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=_property_type(hd, finding),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    study = refs.study_uid
    instance = str(source.SOPInstanceUID)
    try:
        return hd.seg.Segmentation(
            source_images=[source],
            pixel_array=(mask > 0).astype(np.uint8)[None],
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment],
            series_instance_uid=result_uid(identity, study, "seg-series"),
            series_number=SERIES_NUMBER,
            sop_instance_uid=result_uid(identity, study, "seg", instance),
            instance_number=index + 1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=identity.name[:64],
            software_versions=f"dxkit {__version__}",
            device_serial_number=identity.short_hash,
            omit_empty_frames=False,
            series_description=f"dxkit {finding} segmentation"[:64],
        )
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        raise DicomOutputError(f"the mask could not be written as DICOM SEG: {err}") from None


def read_mask(hd: Any, dataset: Any, source_instance_uid: str) -> np.ndarray:
    """The ``(H, W)`` 0/1 mask a SEG holds for one source instance (round-trip check)."""
    import copy

    dataset = copy.deepcopy(dataset)
    for group in dataset.get("SharedFunctionalGroupsSequence", []):
        for measures in group.get("PixelMeasuresSequence", []):
            # Slice Thickness is type 1C (volumes only) and rightly absent for projection
            # radiographs, but highdicom's reader requires it: fill the reading copy only.
            if "SliceThickness" not in measures:
                measures.SliceThickness = 1.0
    seg = hd.seg.Segmentation.from_dataset(dataset)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[source_instance_uid], segment_numbers=[1]
    )
    return np.asarray(pixels[0, :, :, 0], dtype=np.uint8)
