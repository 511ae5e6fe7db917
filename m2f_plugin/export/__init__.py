"""Export to ONNX: a raw image in, the task's final result out.

``load_model`` builds a config's model with its weights, ``export_model``
traces ``DeployedSegmentor`` (the test-time preprocessing of
``ImagePreprocess``, the model, ``m2f_plugin.postprocess``, the way back to
the image size) and writes the file with its metadata; ``torch_predict`` and
``compare`` check it against the PyTorch model. Command line:
``python -m m2f_plugin.tools.export``.
"""
from .check import compare, torch_predict
from .exporter import LoadedModel, export_model, load_model
from .graphs import TASK_OUTPUTS, DeployedSegmentor
from .metadata import read_metadata
from .preprocess import ImagePreprocess, PreprocessSpec, padded_size, resized_size

__all__ = [
    'DeployedSegmentor', 'ImagePreprocess', 'LoadedModel', 'PreprocessSpec',
    'TASK_OUTPUTS', 'compare', 'export_model', 'load_model', 'padded_size',
    'read_metadata', 'resized_size', 'torch_predict'
]
