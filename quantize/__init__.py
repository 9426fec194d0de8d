"""int8 conversion, the model bundle writer and the quantization accuracy report.

Needs TensorFlow (``pip install 'leukoedge[train]'``) for conversion; the report's TFLite
evaluations run through the edge's own inference wrapper.
"""
