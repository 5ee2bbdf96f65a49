"""Cloud segmentation data: scene conventions, the labelled synthetic sample, dataset readers
(38-Cloud), and the training DataModule. The Fmask-like threshold baseline is a model
(:mod:`climdl.models.threshold`); scores live with the task (:mod:`climdl.tasks.seg_metrics`).

Submodules are imported where they are used (the CLI builds its parser without loading torch).
"""
