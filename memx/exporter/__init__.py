"""Exporter: step wrapper, torch.onnx export, the package manifest, parity validation."""

from memx.exporter.to_onnx import export, export_preset, load_checkpoint
from memx.exporter.manifest import FORMAT_VERSION, Manifest
from memx.exporter.package import Package
from memx.exporter.validate import ParityReport, validate

__all__ = ["FORMAT_VERSION", "Manifest", "Package", "ParityReport", "export", "export_preset", "load_checkpoint", "validate"]
