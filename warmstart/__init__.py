"""warmstart: start services from a warm CRIU snapshot instead of booting them cold."""

__version__ = "0.1.0"
