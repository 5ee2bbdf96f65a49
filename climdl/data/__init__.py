"""Reading climate data into canonical xarray Datasets (names, units, coordinates)."""
