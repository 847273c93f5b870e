"""Quantization: QAT through torchao PT2E (qat.py), int8 export and the report (export.py)."""
