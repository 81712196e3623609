"""Where models registered before the pyfunc moved to `jobs.core.packaging` find it: they were
logged as a pickled `SaccadePyfunc`, pickled by this module path. Nothing else imports it."""

from jobs.core.packaging import SaccadePyfunc

__all__ = ["SaccadePyfunc"]
