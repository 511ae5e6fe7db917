"""Load an exported Mask2Former ONNX model, check it, and run it on images.

The model file carries its own description in its ONNX metadata (format 1):
task, class names, palette, channel order and output names. The graph does
all pre- and post-processing, so running it is: check the image, put its
channels in the model's order, run, wrap the outputs in a result.

Images: a path is read with OpenCV as BGR (grey and RGBA files become BGR).
An array is taken as BGR (OpenCV's order, e.g. a ``cv2.VideoCapture``
frame) unless ``channel_order='rgb'`` is passed (e.g. a PIL image as an
array). Either way it is converted to the order the model expects.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from .formats import import_cv2
from .images import check_image, read_image
from .results import InstanceResult, PanopticResult, SemanticResult

__all__ = [
    'FORMAT_VERSION', 'TASKS', 'REQUIRED_OUTPUTS', 'EXPORT_COMMAND',
    'ModelInfo', 'Segmenter', 'import_onnxruntime'
]

FORMAT_VERSION = '1'
TASKS = ('semantic', 'panoptic', 'instance')
REQUIRED_OUTPUTS = {'semantic': ('labels',), 'panoptic': ('panoptic', 'segments'),
                    'instance': ('labels', 'scores', 'boxes', 'masks')}
EXPORT_COMMAND = ('python -m m2f_plugin.tools.export CONFIG --checkpoint CKPT '
                  '--out model.onnx')
ImageInput = Union[str, 'os.PathLike[str]', np.ndarray]
Result = Union[SemanticResult, PanopticResult, InstanceResult]


def import_onnxruntime():
    """Import onnxruntime, or raise an ImportError that says how to install
    it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(
            'm2f_deploy runs models with onnxruntime: `pip install '
            f'onnxruntime` (or onnxruntime-gpu for CUDA). ({exc})') from exc
    return onnxruntime


@dataclass(frozen=True)
class ModelInfo:
    """The metadata of an exported model (see ``from_metadata``)."""

    task: str
    classes: List[str]
    palette: List[List[int]]
    num_things: int
    channel_order: str
    outputs: List[str]
    instance_offset: Optional[int] = None
    preprocess: Optional[Dict[str, Any]] = None
    config: Optional[str] = None
    plugin_version: Optional[str] = None

    @classmethod
    def from_metadata(cls, props: Mapping[str, str],
                      source: str = 'the model') -> 'ModelInfo':
        """Parse and check ONNX metadata props.

        Args:
            props: ``model.metadata_props`` as a dict of strings.
            source: How to name the model in error messages (its path).

        Raises:
            ValueError: Not an m2f_plugin export, another format version, or
                a value that does not follow format 1.
        """
        if 'm2f_format' not in props or 'm2f_task' not in props:
            raise ValueError(
                f'{source} was not exported by m2f_plugin: its ONNX metadata '
                'has no m2f_format/m2f_task. Export the model with '
                f'`{EXPORT_COMMAND}`.')
        if props['m2f_format'] != FORMAT_VERSION:
            raise ValueError(
                f'{source} is in m2f model format {props["m2f_format"]!r}, '
                f'this m2f_deploy reads format {FORMAT_VERSION!r}: use the '
                'm2f_deploy of the m2f_plugin that exported it (version '
                f'{props.get("m2f_plugin_version", "unknown")}) or export the '
                f'model again with `{EXPORT_COMMAND}`.')

        def get(key: str, check: Callable[[Any], bool], expected: str,
                as_json: bool = True) -> Any:
            try:
                value = json.loads(props[key]) if as_json else props[key]
                if check(value):
                    return value
            except (KeyError, TypeError, ValueError):
                pass
            raise ValueError(
                f'{source}: metadata {key}={props.get(key)!r} is not '
                f'{expected} as format {FORMAT_VERSION} requires; export the '
                f'model again with `{EXPORT_COMMAND}`.')

        def is_list(value: Any, item: Callable[[Any], bool]) -> bool:
            return isinstance(value, list) and all(item(v) for v in value)

        def is_str(value: Any) -> bool:
            return isinstance(value, str)

        task = get('m2f_task', lambda v: v in TASKS, ' or '.join(TASKS), False)
        classes = get('m2f_classes', lambda v: v and is_list(v, is_str),
                      'a non-empty JSON list of class names')
        k = len(classes)
        palette = get(
            'm2f_palette', lambda v: len(v) == k and is_list(
                v, lambda c: len(c) == 3 and is_list(
                    c, lambda x: isinstance(x, int) and 0 <= x <= 255)),
            f'a JSON list of {k} [r, g, b] lists (0..255)')
        num_things = get('m2f_num_things',
                         lambda v: isinstance(v, int) and 0 <= v <= k,
                         f'an integer in 0..{k}')
        required = list(REQUIRED_OUTPUTS[task])
        outputs = get('m2f_outputs', lambda v: is_list(v, is_str)
                      and set(required) <= set(v),
                      f'a JSON list of output names with {required}')
        order = get('m2f_channel_order', lambda v: v in ('bgr', 'rgb'),
                    '"bgr" or "rgb"', False)
        offset = None
        if task == 'panoptic':
            offset = get('m2f_instance_offset',
                         lambda v: isinstance(v, int) and v > 0,
                         'a positive integer')
        try:  # informational only: the graph does the preprocessing
            preprocess = json.loads(props.get('m2f_preprocess', 'null'))
        except ValueError:
            preprocess = None
        return cls(task=task, classes=classes, palette=palette,
                   num_things=num_things, channel_order=order, outputs=outputs,
                   instance_offset=offset, preprocess=preprocess,
                   config=props.get('m2f_config'),
                   plugin_version=props.get('m2f_plugin_version'))


class Segmenter:
    """Runs an exported Mask2Former ONNX model.

    Args:
        model: Path of the ``.onnx`` file.
        task: If given, the task the model must have ('semantic',
            'panoptic' or 'instance').
        max_side: Largest image side accepted (memory grows with the image).
        providers: onnxruntime execution providers; by default CUDA when
            available, then CPU.
        threads: onnxruntime's intra-op threads (its default if None).

    Raises:
        ImportError: onnxruntime or OpenCV is missing.
        FileNotFoundError: No model file.
        ValueError: Not a model this runtime can run (see the message).

    Example:
        >>> seg = Segmenter('model.onnx')
        >>> result = seg('image.jpg')
        >>> result.save('out/', name='image')
    """

    def __init__(self, model: Union[str, 'os.PathLike[str]'],
                 task: Optional[str] = None, max_side: int = 8192,
                 providers: Optional[Sequence[Any]] = None,
                 threads: Optional[int] = None) -> None:
        ort = import_onnxruntime()
        import_cv2()
        if task is not None and task not in TASKS:
            raise ValueError(f'task={task!r}: expected one of {TASKS}')
        self.path = os.fspath(model)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f'model file not found: {self.path}')
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        if threads:
            options.intra_op_num_threads = threads
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ('CUDAExecutionProvider',
                                     'CPUExecutionProvider') if p in available]
        try:
            self.ort_session = ort.InferenceSession(self.path, options,
                                                providers=list(providers))
        except Exception as exc:  # onnxruntime's own error classes
            raise ValueError(f'onnxruntime cannot load {self.path}: {exc}'
                             ) from exc
        props = self.ort_session.get_modelmeta().custom_metadata_map
        self.info = ModelInfo.from_metadata(props, self.path)
        if task is not None and task != self.info.task:
            raise ValueError(f'{self.path} is a model for task '
                             f'{self.info.task!r}, but task={task!r} was '
                             'asked for')
        inputs = [i.name for i in self.ort_session.get_inputs()]
        if inputs != ['image']:
            raise ValueError(f'{self.path} has inputs {inputs}; format '
                             f"{FORMAT_VERSION} has one, 'image'")
        graph_outputs = [o.name for o in self.ort_session.get_outputs()]
        missing = [n for n in self.info.outputs if n not in graph_outputs]
        if missing:
            raise ValueError(
                f'{self.path} lacks the outputs {missing} that its metadata '
                f'(m2f_outputs) lists; the graph has {graph_outputs}. Export '
                f'the model again with `{EXPORT_COMMAND}`.')
        self.max_side = int(max_side)

    @property
    def task(self) -> str:
        """'semantic', 'panoptic' or 'instance'."""
        return self.info.task

    @property
    def classes(self) -> List[str]:
        """The class names."""
        return self.info.classes

    def __repr__(self) -> str:
        return (f'Segmenter({self.path!r}, task={self.task!r}, '
                f'classes={len(self.classes)})')

    def __call__(self, image: ImageInput,
                 channel_order: str = 'bgr') -> Result:
        """Segment one image.

        Args:
            image: A file path, or an ``(H, W, 3)`` uint8 array.
            channel_order: Channel order of an array, 'bgr' (OpenCV's) or
                'rgb'; files are always read as BGR.

        Returns:
            A SemanticResult, PanopticResult or InstanceResult, holding the
            image as BGR.
        """
        if channel_order not in ('bgr', 'rgb'):
            raise ValueError(f"channel_order={channel_order!r}: expected "
                             "'bgr' or 'rgb'")
        if isinstance(image, (str, os.PathLike)):
            image, channel_order = read_image(image), 'bgr'
        image = check_image(image, self.max_side)
        bgr = image if channel_order == 'bgr' else image[..., ::-1]
        feed = bgr if self.info.channel_order == 'bgr' else bgr[..., ::-1]
        names = self.info.outputs
        values = self.ort_session.run(names, {'image': np.ascontiguousarray(feed)})
        return self._result(dict(zip(names, values)),
                            np.ascontiguousarray(bgr))

    def _result(self, out: Dict[str, np.ndarray], image: np.ndarray) -> Result:
        height, width = image.shape[:2]
        info = self.info

        def get(name: str, shape: Sequence[Optional[int]]) -> np.ndarray:
            value = np.asarray(out[name])
            if value.ndim != len(shape) or any(
                    s is not None and s != v for s, v in zip(shape, value.shape)):
                want = tuple('N' if s is None else s for s in shape)
                raise RuntimeError(
                    f'{self.path}: output {name!r} has shape {value.shape}, '
                    f'format {FORMAT_VERSION} needs {want} for a '
                    f'{width}x{height} image')
            return value

        common = dict(classes=info.classes, palette=info.palette, image=image)
        if info.task == 'semantic':
            scores = (get('scores', (len(info.classes), height, width))
                      if 'scores' in out else None)
            return SemanticResult(labels=get('labels', (height, width)).astype(
                np.int64), scores=scores, **common)
        if info.task == 'panoptic':
            rows = get('segments', (None, 4))
            segments = []
            for seg_id, label, score, area in rows.tolist():
                label = int(label)
                segments.append({
                    'id': int(seg_id), 'category_id': label,
                    'category_name': self._class_name(label),
                    'isthing': label < info.num_things, 'score': float(score),
                    'area': int(area)})
            return PanopticResult(
                panoptic=get('panoptic', (height, width)).astype(np.int32),
                segments=segments, **common)
        labels = get('labels', (None,)).astype(np.int64)
        num = len(labels)
        for label in labels.tolist():
            self._class_name(label)  # raises for an index out of range
        return InstanceResult(
            labels=labels, scores=get('scores', (num,)).astype(np.float32),
            boxes=get('boxes', (num, 4)).astype(np.float32),
            masks=get('masks', (num, height, width)).astype(bool), **common)

    def _class_name(self, index: int) -> str:
        if not 0 <= index < len(self.info.classes):
            raise RuntimeError(f'{self.path}: output class index {index} is '
                               f'not in 0..{len(self.info.classes) - 1}')
        return self.info.classes[index]
