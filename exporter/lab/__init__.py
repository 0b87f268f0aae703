"""The simulated Perfecto lab: a stand-in Execution Manager server. Nothing in the exporter imports it."""

from .license_pool import parse_licenses
from .server import FAULT_KINDS, Lab, serve_lab
from .workload import Workload

__all__ = ["FAULT_KINDS", "Lab", "Workload", "parse_licenses", "serve_lab"]
