"""Applying trained models to new data: streaming downscaling (and tiled segmentation).

``downscale`` reads predictors a chunk of time at a time, brings them onto the grid the emulator
was trained on, runs the network on the device, and writes CF NetCDF as it goes.
"""

from climdl.inference.downscale import DownscaleResult, downscale

__all__ = ["DownscaleResult", "downscale"]
