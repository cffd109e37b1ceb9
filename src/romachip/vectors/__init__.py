"""Golden test vectors for the RTL of a ROMA chip: per unit and op, what it holds, receives and must
produce, from a real burned model (write_vectors), and an independent checker (check_vectors).
docs/vectors.md is the format."""

from romachip.vectors.check import CheckReport, Mismatch, check_vectors
from romachip.vectors.write import VectorsReport, write_vectors

__all__ = ["CheckReport", "Mismatch", "VectorsReport", "check_vectors", "write_vectors"]
