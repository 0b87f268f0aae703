"""perfecto-exporter: Prometheus metrics for running Perfecto executions, and safe stops."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("perfecto-exporter")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
