"""Small ONNX models that follow the exported-model contract (format 1).

Their outputs are simple functions of the input image (channel thresholds),
so tests know every output value exactly. Built with ``onnx.helper`` only:
no torch, no exporter. Images are (H, W, 3) uint8; channel 0 is the first
channel the model sees (B for a 'bgr' model).
"""
from __future__ import annotations

import json
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ['metadata', 'semantic_model', 'panoptic_model', 'instance_model',
           'PALETTE']

OPSET = 17
IR_VERSION = 8  # read by every onnxruntime in use
PALETTE = [[220, 20, 60], [0, 0, 142], [70, 130, 180], [128, 64, 128],
           [0, 80, 100], [250, 170, 30]]


class _Graph:
    """Collects nodes and constants; names are generated."""

    def __init__(self) -> None:
        self.nodes, self.inits, self.count = [], [], 0

    def const(self, value, dtype) -> str:
        name = f'c{self.count}'
        self.count += 1
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype),
                                                  name))
        return name

    def op(self, op_type: str, *inputs: str, out: Optional[str] = None,
           **attrs) -> str:
        if out is None:
            out = f't{self.count}'
            self.count += 1
        self.nodes.append(helper.make_node(op_type, list(inputs), [out],
                                           **attrs))
        return out

    def channel_above(self, channel: int, threshold: int) -> str:
        """(H, W) bool: ``image[..., channel] > threshold``."""
        plane = self.op('Gather', 'image', self.const(channel, np.int64),
                        axis=2)
        as_float = self.op('Cast', plane, to=TensorProto.FLOAT)
        return self.op('Greater', as_float,
                       self.const(threshold, np.float32))

    def save(self, path: str, outputs: Sequence[Tuple[str, int, list]],
             props: Dict[str, Optional[str]]) -> str:
        image = helper.make_tensor_value_info('image', TensorProto.UINT8,
                                              ['H', 'W', 3])
        outs = [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs]
        graph = helper.make_graph(self.nodes, 'fake_m2f', [image], outs,
                                  initializer=self.inits)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid('', OPSET)],
            ir_version=IR_VERSION)
        helper.set_model_props(
            model, {k: v for k, v in props.items() if v is not None})
        onnx.checker.check_model(model)
        onnx.save(model, path)
        return path


def metadata(task: str, classes: Sequence[str], num_things: int,
             outputs: Sequence[str], channel_order: str = 'bgr',
             **overrides: Optional[str]) -> Dict[str, Optional[str]]:
    """Format-1 metadata; ``overrides`` replace keys (None drops one)."""
    props = {
        'm2f_format': '1', 'm2f_task': task,
        'm2f_classes': json.dumps(list(classes)),
        'm2f_num_things': str(num_things),
        'm2f_palette': json.dumps(
            [PALETTE[i % len(PALETTE)] for i in range(len(classes))]),
        'm2f_channel_order': channel_order,
        'm2f_preprocess': json.dumps({
            'resize': None, 'mean': [0, 0, 0], 'std': [1, 1, 1],
            'to_rgb': False, 'size_divisor': None, 'pad_size': None,
            'pad_value': 0}),
        'm2f_outputs': json.dumps(list(outputs)),
        'm2f_config': 'fake.py', 'm2f_plugin_version': '0.0.0',
    }
    if task == 'panoptic':
        props['m2f_instance_offset'] = '1000'
    props.update(overrides)
    return props


def semantic_model(path: str, num_classes: int = 3, mode: str = 'threshold',
                   scores: bool = False, channel_order: str = 'bgr',
                   **overrides: Optional[str]) -> str:
    """``labels`` = (ch0 > 127) + (ch1 > 127) (mode 'threshold') or
    ch0 + 44 (mode 'value', for more than 255 classes); ``scores`` =
    one-hot of the labels."""
    g = _Graph()
    if mode == 'threshold':
        a, b = (g.op('Cast', g.channel_above(c, 127), to=TensorProto.INT64)
                for c in (0, 1))
        labels = g.op('Add', a, b, out='labels')
    else:
        plane = g.op('Gather', 'image', g.const(0, np.int64), axis=2)
        labels = g.op('Add', g.op('Cast', plane, to=TensorProto.INT64),
                      g.const(44, np.int64), out='labels')
    outputs = [('labels', TensorProto.INT64, ['H', 'W'])]
    if scores:
        g.op('OneHot', labels, g.const(num_classes, np.int64),
             g.const([0, 1], np.float32), axis=0, out='scores')
        outputs.append(('scores', TensorProto.FLOAT, [num_classes, 'H', 'W']))
    classes = [f'class{i}' for i in range(num_classes)]
    props = metadata('semantic', classes, 0, [n for n, _, _ in outputs],
                     channel_order, **overrides)
    return g.save(path, outputs, props)


def panoptic_model(path: str, classes: Sequence[str], num_things: int,
                   rules: Sequence[Tuple[int, int, int]],
                   segments: Sequence[Tuple[int, int, float]],
                   **overrides: Optional[str]) -> str:
    """``panoptic``: void (K) where no rule holds; rules ``(channel,
    threshold, id)`` apply in order, later ones win. ``segments``: the rows
    ``(id, class, score)`` (sorted by id) whose id is in the map, with the
    area counted."""
    g = _Graph()
    plane = g.op('Gather', 'image', g.const(0, np.int64), axis=2)
    void = helper.make_tensor('v', TensorProto.INT32, [1], [len(classes)])
    panoptic = g.op('ConstantOfShape', g.op('Shape', plane), value=void)
    for i, (channel, threshold, seg_id) in enumerate(rules):
        last = i == len(rules) - 1
        panoptic = g.op('Where', g.channel_above(channel, threshold),
                        g.const(seg_id, np.int32), panoptic,
                        out='panoptic' if last else None)
    table = np.array(segments, np.float64).reshape(-1, 3)
    ids = g.const(table[:, 0].astype(np.int32).reshape(-1, 1, 1), np.int32)
    hits = g.op('Equal', g.op('Unsqueeze', panoptic, g.const([0], np.int64)),
                ids)
    area = g.op('ReduceSum', g.op('Cast', hits, to=TensorProto.DOUBLE),
                g.const([1, 2], np.int64), keepdims=0)
    rows = g.op('Concat', g.const(table, np.float64),
                g.op('Unsqueeze', area, g.const([1], np.int64)), axis=1)
    g.op('Compress', rows, g.op('Greater', area, g.const(0, np.float64)),
         axis=0, out='segments')
    outputs = [('panoptic', TensorProto.INT32, ['H', 'W']),
               ('segments', TensorProto.DOUBLE, ['N', 4])]
    props = metadata('panoptic', classes, num_things,
                     ['panoptic', 'segments'], **overrides)
    return g.save(path, outputs, props)


def instance_model(path: str, classes: Sequence[str] = ('cat', 'dog'),
                   channels: Sequence[int] = (0, 1),
                   labels: Sequence[int] = (0, 1),
                   scores: Sequence[float] = (0.9, 0.6),
                   **overrides: Optional[str]) -> str:
    """Instance i: mask ``ch[i] > 127``, class ``labels[i]``, score
    ``scores[i]``, box = the mask's extent (x2, y2 exclusive); instances with
    empty masks are dropped (N may be 0)."""
    g = _Graph()
    zero = g.const([0], np.int64)
    masks = g.op('Concat', *[g.op('Unsqueeze', g.channel_above(c, 127), zero)
                             for c in channels], axis=0)
    as_float = g.op('Cast', masks, to=TensorProto.FLOAT)
    area = g.op('ReduceSum', as_float, g.const([1, 2], np.int64), keepdims=0)
    keep = g.op('Greater', area, g.const(0, np.float32))
    cols = g.op('ReduceMax', as_float, axes=[1], keepdims=0)  # (N, W)
    rows = g.op('ReduceMax', as_float, axes=[2], keepdims=0)  # (N, H)
    one = g.const(1, np.int64)
    corners = [g.op('ArgMax', cols, axis=1, keepdims=1),
               g.op('ArgMax', rows, axis=1, keepdims=1),
               g.op('Add', g.op('ArgMax', cols, axis=1, keepdims=1,
                                select_last_index=1), one),
               g.op('Add', g.op('ArgMax', rows, axis=1, keepdims=1,
                                select_last_index=1), one)]
    boxes = g.op('Cast', g.op('Concat', *corners, axis=1),
                 to=TensorProto.FLOAT)
    for name, value in (('labels', g.const(labels, np.int64)),
                        ('scores', g.const(scores, np.float32)),
                        ('boxes', boxes), ('masks', masks)):
        g.op('Compress', value, keep, axis=0, out=name)
    outputs = [('labels', TensorProto.INT64, ['N']),
               ('scores', TensorProto.FLOAT, ['N']),
               ('boxes', TensorProto.FLOAT, ['N', 4]),
               ('masks', TensorProto.BOOL, ['N', 'H', 'W'])]
    props = metadata('instance', classes, len(classes),
                     [n for n, _, _ in outputs], **overrides)
    return g.save(path, outputs, props)
