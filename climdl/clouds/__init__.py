"""Cloud segmentation data: scene conventions, the labelled synthetic sample, dataset readers
(38-Cloud), the Fmask-like threshold baseline, scores, and the training DataModule.

Submodules are imported where they are used (the CLI builds its parser without loading torch).
"""
