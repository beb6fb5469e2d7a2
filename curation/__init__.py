"""curation: the library half of the pipeline (plain Python and NumPy, no Beam)."""

__version__ = "0.1.0"
