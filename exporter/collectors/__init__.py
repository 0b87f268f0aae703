"""Metric families, one collector per concern, each registered on the exporter's own registry.

Collectors are pure: they turn what the pollers, the client and the webhook already hold into
fresh metric families, and never do I/O (but for client_python's process collector, which reads
``/proc`` at each render, in :class:`~exporter.collectors.health.RuntimeCollector`). Each has a
real ``describe()`` (client_python's ``/metrics?name[]=`` selection needs it) and a
``version()`` that changes whenever ``collect()`` would yield something else, which is how
:mod:`exporter.exposition` knows when to render.
"""

from .executions import ExecutionsCollector
from .health import HealthCollector, RuntimeCollector
from .licenses import LicensesCollector
from .remediation import RemediationCollector
from .reporting import OutcomesCollector, ReportingHealthCollector
from .usage import UsageCollector

__all__ = ["ExecutionsCollector", "HealthCollector", "LicensesCollector", "OutcomesCollector", "RemediationCollector",
           "ReportingHealthCollector", "RuntimeCollector", "UsageCollector"]
