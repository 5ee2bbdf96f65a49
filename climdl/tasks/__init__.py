"""Lightning tasks: training objectives (losses), the downscaling and segmentation modules, their
scores (:mod:`~climdl.tasks.seg_metrics`, :mod:`~climdl.tasks.baseline`,
:mod:`~climdl.tasks.threshold_scores`) and ``climdl train``."""
