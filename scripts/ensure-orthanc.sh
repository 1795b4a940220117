#!/usr/bin/env bash
# Install Debian's Orthanc PACS and its DICOMweb plugin for the PACS tests when missing and
# we are allowed to (root + apt); otherwise those tests skip with a reason. The packaged
# systemd service is left disabled: each test session starts (and stops) its own Orthanc.
set -u
PLUGIN=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
if command -v Orthanc >/dev/null 2>&1 && [ -f "$PLUGIN" ]; then exit 0; fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "orthanc not installed and no root/apt: PACS tests will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if apt-get update -qq >/dev/null && apt-get install -y -qq orthanc orthanc-dicomweb >/dev/null; then
  # The package enables (and may start) its service; we never want a resident PACS.
  if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now orthanc >/dev/null 2>&1 || true
  fi
  rm -f /etc/systemd/system/multi-user.target.wants/orthanc.service
else
  echo "could not install orthanc: PACS tests will be skipped" >&2
fi
exit 0
