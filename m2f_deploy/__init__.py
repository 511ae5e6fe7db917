"""Run exported Mask2Former ONNX models with onnxruntime, NumPy and OpenCV.

No torch and no OpenMMLab packages are needed::

    from m2f_deploy import Segmenter
    seg = Segmenter('model.onnx')            # reads + checks the metadata
    result = seg('image.jpg')                # path or (H, W, 3) uint8 BGR array
    result.save('out/', name='image')        # overlay + standard result files

or from the command line: ``python -m m2f_deploy model.onnx IMAGES... --out
DIR``. Models are exported by ``python -m m2f_plugin.tools.export``.

onnxruntime and OpenCV are imported when a Segmenter is created, so the
format helpers (COCO RLE, panoptic PNG ids) work without them.
"""
from .formats import decode_rle, encode_rle, ids_to_rgb, rgb_to_ids
from .images import read_image
from .model import FORMAT_VERSION, ModelInfo, Segmenter
from .results import InstanceResult, PanopticResult, SemanticResult

__all__ = [
    'Segmenter', 'ModelInfo', 'SemanticResult', 'PanopticResult',
    'InstanceResult', 'FORMAT_VERSION', 'read_image', 'encode_rle',
    'decode_rle', 'ids_to_rgb', 'rgb_to_ids'
]
