"""Pixels to cells: decoding, stain segmentation, the red-cell ruler, detection, whole-cell test, crops."""
