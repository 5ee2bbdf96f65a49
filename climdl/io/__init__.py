"""Files on disk: atomic NetCDF writes, file checksums, provenance attributes, and OS errors
turned into one-sentence :class:`~climdl.errors.OutputError` messages."""
