"""audioflow: labelled recordings in, a validated, evaluated ONNX classifier out."""
__version__ = "0.1.0"
