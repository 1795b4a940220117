"""dxkit: deep-learning-assisted diagnosis from medical scans."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dxkit")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
