"""Which columns of a source name patient identity (refused) or identify scans (counted,
never shown), and the pseudonym shown for a patient id.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

# Identity columns are refused outright (values never read into a summary); identifier
# columns (ids, UIDs, file paths) are used only to count and are never shown.
# fmt: off
_PHI_EXACT = {"sex", "age", "dob", "mrn", "patientsex", "patientage", "patientweight",
              "patientsize", "otherpatientids", "studytime", "seriestime", "acquisitiontime",
              "contenttime"}
_PHI_PARTS = ("birth", "address", "phone", "email", "ssn", "accession", "institution",
              "physician", "operator", "date")
_SAFE_NAMES = {"manufacturermodelname", "protocolname", "sequencename"}
_ID_EXACT = {"file", "path", "filename", "split", "instancenumber", "imagepositionpatient",
             "sliceposition"}
_ID_ENDINGS = ("uid", "patientid", "examid", "studyid", "seriesid", "subjectid", "caseid")
# fmt: on


def _norm(name: str) -> str:
    return re.sub(r"[^a-z]", "", str(name).lower())


def phi_columns(columns: Iterable[str]) -> list[str]:
    """Columns that name patient identity (names, dates, addresses, sex, age...): refused."""
    found = []
    for column in columns:
        n = _norm(column)
        named = "name" in n and n not in _SAFE_NAMES
        if n in _PHI_EXACT or named or any(part in n for part in _PHI_PARTS):
            found.append(str(column))
    return found


def is_identifier_column(column: str) -> bool:
    """Ids, UIDs and file paths: counted, never shown."""
    n = _norm(column)
    if n in _ID_EXACT or n.endswith(_ID_ENDINGS):
        return True
    # "patient_id", "exam-id", "PatientID", "examId"; not "valid" or "fluid"
    return bool(re.search(r"(^|[_\s-])id$", column, re.IGNORECASE) or re.search(r"I[Dd]$", column))


def hash_id(value: object, salt: str) -> str:
    """A pseudonym for a patient id (SHA-256 of salt + id, 12 hex digits)."""
    return hashlib.sha256(f"{salt}{value}".encode()).hexdigest()[:12]
