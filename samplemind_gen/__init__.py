"""samplemind-gen: offline-first neural audio generation for music producers."""

__version__ = "0.1.0"
