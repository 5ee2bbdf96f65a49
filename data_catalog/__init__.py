"""The packaged dataset catalog: this folder ships in the wheel as ``climdl.data_catalog``.

:func:`climdl.data.catalog.catalog_paths` reads its ``*.yaml`` with importlib.resources;
pyproject.toml maps this folder to the package, so the repository keeps one copy of each file.
"""
