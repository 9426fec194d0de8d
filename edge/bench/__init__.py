"""Timing the edge on this machine: ``leukoedge bench`` and the helpers behind ``benchmarks/``."""
