"""Number formats and quantizers: group-wise uintN weight codes, FP8/INT8, checkpoint import."""
