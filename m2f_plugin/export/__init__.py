"""Export to ONNX: the raw image's test-time preprocessing as a graph."""
from .preprocess import ImagePreprocess, PreprocessSpec, padded_size, resized_size

__all__ = ['ImagePreprocess', 'PreprocessSpec', 'padded_size', 'resized_size']
