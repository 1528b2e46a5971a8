"""hpmcore: Action Quality Assessment with HP-MCoRe, as a reproducible pipeline library."""

__version__ = "0.1.0"
