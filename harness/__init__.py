"""Hardware test-bench harness for device backup and restore."""

__version__ = "0.1.0"
