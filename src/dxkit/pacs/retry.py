"""Retry a PACS call with exponential backoff, then fail with one clear message.

dicomweb-client raises requests' exceptions; connection failures, timeouts and 5xx answers
are retried (a PACS restarting or busy), 4xx answers are not (retrying cannot fix them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import requests

from dxkit.pacs.errors import PacsError

log = logging.getLogger(__name__)
T = TypeVar("T")


def _retryable(err: Exception) -> bool:
    if isinstance(err, requests.HTTPError):
        status = err.response.status_code if err.response is not None else 0
        return status >= 500 or status == 429
    return isinstance(err, (requests.ConnectionError, requests.Timeout, ConnectionError))


def with_retries(
    what: str, call: Callable[[], T], attempts: int = 4, first_delay: float = 0.5
) -> T:
    """``call()``, retried ``attempts`` times in all (delays 0.5, 1, 2 s …)."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except (requests.RequestException, ConnectionError) as err:
            if not _retryable(err) or attempt == attempts:
                raise PacsError(_message(what, err, attempt)) from None
            log.warning("%s failed (%s); retry %d in %.1f s", what, type(err).__name__,
                        attempt, delay)  # fmt: skip
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _message(what: str, err: Exception, attempts: int) -> str:
    if isinstance(err, requests.HTTPError) and err.response is not None:
        reason = f"the PACS answered HTTP {err.response.status_code}"
    elif isinstance(err, requests.Timeout):
        reason = "the PACS did not answer in time"
    else:
        reason = "the PACS could not be reached (connection refused or dropped)"
    return (
        f"{what}: {reason} after {attempts} attempt(s); check that the PACS is running and "
        "the --url is right, then rerun (finished studies are not redone)"
    )
