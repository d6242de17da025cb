"""Recovering accuracy after pruning, without training: bias compensation and BatchNorm recalibration.

``bias_compensation`` folds the expected value of each removed channel into its consumers (it runs as
channel pruning's ``before_prune`` hook, on the unpruned model); ``bn_recalibration`` re-estimates every
BatchNorm's running statistics on unlabelled calibration images after pruning, before fusing.
"""
