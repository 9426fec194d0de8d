"""Training side of leukoedge: data loaders, splits, LeukoNet, training and evaluation.

Importing this package does not import TensorFlow; the modules that need it import it themselves.
Install with ``pip install 'leukoedge[train]'``.
"""
