"""Lightning tasks: training objectives (losses) and modules for downscaling."""
