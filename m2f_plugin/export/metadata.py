"""What an exported file says about itself: task, classes, thing/stuff
split, palette and preprocessing, as ONNX ``metadata_props`` (strings; JSON
where structured), so a consumer needs nothing else."""
from __future__ import annotations

import json
import warnings
from typing import Dict, List, Sequence, Tuple

__all__ = ['FORMAT_VERSION', 'class_info', 'metadata_props', 'read_metadata',
           'write_metadata']

FORMAT_VERSION = '1'


def _dataset_cfg(cfg) -> dict:
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader') or {}
    dataset = loader.get('dataset', {}) if hasattr(loader, 'get') else {}
    while isinstance(dataset, dict) and 'dataset' in dataset:  # wrappers
        dataset = dataset['dataset']
    return dataset if isinstance(dataset, dict) else {}


def class_info(cfg, family: str, num_classes: int, num_things: int
               ) -> Tuple[List[str], List[List[int]]]:
    """Class names and palette of the config's test data set.

    From the data set class's ``METAINFO``, overridden by the config's
    ``metainfo``; generic names and a fixed palette (with a warning) when
    they are missing or do not match the model's class count.

    Args:
        cfg: The config.
        family: ``mmseg`` or ``mmdet`` (whose data set registry to read).
        num_classes: The model's K.
        num_things: Thing classes (to check an mmdet data set's split).
    """
    dataset = _dataset_cfg(cfg)
    meta: dict = {}
    name = dataset.get('type')
    if isinstance(name, str):
        if family == 'mmseg':
            from mmseg.registry import DATASETS
        else:
            from mmdet.registry import DATASETS
        cls = DATASETS.get(name.split('.')[-1]) or DATASETS.get(name)
        meta.update(getattr(cls, 'METAINFO', None) or {})
    meta.update(dataset.get('metainfo') or {})
    classes = [str(c) for c in meta.get('classes', ())]
    if len(classes) != num_classes:
        warnings.warn(
            f'export: the test data set names {len(classes)} classes but the '
            f'model predicts {num_classes}; writing class_0..class_'
            f'{num_classes - 1} (set metainfo=dict(classes=...) on the '
            'test data set to name them)')
        classes = [f'class_{i}' for i in range(num_classes)]
    palette = [list(map(int, c)) for c in meta.get('palette', ())]
    if len(palette) < num_classes:
        palette = palette + _fixed_palette(num_classes)[len(palette):]
    return classes, palette[:num_classes]


def _fixed_palette(n: int) -> List[List[int]]:
    """n distinct, reproducible colours."""
    import numpy as np
    rng = np.random.RandomState(42)
    return rng.randint(0, 256, (n, 3)).tolist()


def metadata_props(task: str, classes: Sequence[str], num_things: int,
                   palette: Sequence[Sequence[int]], preprocess: dict,
                   outputs: Sequence[str], config_name: str,
                   instance_offset: int) -> Dict[str, str]:
    """The ``m2f_*`` metadata entries of an exported file."""
    from ..version import __version__
    props = dict(
        m2f_format=FORMAT_VERSION, m2f_task=task,
        m2f_classes=json.dumps(list(classes)),
        m2f_num_things=str(int(num_things)),
        m2f_palette=json.dumps([list(map(int, c)) for c in palette]),
        m2f_channel_order=preprocess['channel_order'],
        m2f_preprocess=json.dumps(preprocess),
        m2f_outputs=json.dumps(list(outputs)), m2f_config=config_name,
        m2f_plugin_version=__version__)
    if task == 'panoptic':
        props['m2f_instance_offset'] = str(int(instance_offset))
    return props


def write_metadata(path: str, props: Dict[str, str]) -> None:
    """Replace the ``m2f_*`` metadata of the ONNX file at ``path``."""
    import onnx
    model = onnx.load(path)
    kept = [p for p in model.metadata_props if not p.key.startswith('m2f_')]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)


def read_metadata(path: str) -> Dict[str, str]:
    """The ``m2f_*`` metadata of an ONNX file (empty if it has none)."""
    import onnx
    model = onnx.load(path, load_external_data=False)
    return {p.key: p.value for p in model.metadata_props
            if p.key.startswith('m2f_')}
