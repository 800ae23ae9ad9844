"""Exports of fine-tuned models for other runtimes (ONNX, for QGIS's Deepness)."""

from .onnx import EXPORTABLE_TASKS, RawInputModel, deepness_metadata, export_onnx

__all__ = ('EXPORTABLE_TASKS', 'RawInputModel', 'deepness_metadata', 'export_onnx')
