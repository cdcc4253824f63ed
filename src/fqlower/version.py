"""fqlower's version (its own module: the change log records it, and the log sits
below the package's __init__)."""

__version__ = "0.1.0"
