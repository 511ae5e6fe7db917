"""Export of the three tasks, image to result: onnxruntime against the
PyTorch model's own prediction (its toolbox's test_step) at sizes that were
not traced, the file's metadata, and the refusals."""
from __future__ import annotations

import glob
import json
import os
import os.path as osp

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from m2f_plugin.export.check import compare, torch_predict
from m2f_plugin.export.exporter import export_model, load_model
from m2f_plugin.export.metadata import read_metadata
from m2f_plugin.export.preprocess import PreprocessSpec
from m2f_plugin.tools.export import main as export_main
from tests.helpers.export_models import tiny_config

# (H, W) neither traced (161 x 243) nor a multiple of 32; one portrait
SIZES = [(97, 131), (203, 150)]


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    """Two synthetic-shapes images at the odd sizes, as files."""
    from m2f_plugin.datasets import generate_synthetic_shapes
    root = generate_synthetic_shapes(
        str(tmp_path_factory.mktemp('shapes') / 'root'), num_train=1,
        num_val=2, size=96, seed=3)
    files = sorted(glob.glob(osp.join(root, 'img_dir/val/*.png')))
    out = []
    for (h, w), f in zip(SIZES, files):
        path = str(tmp_path_factory.mktemp('img') / f'{h}x{w}.png')
        cv2.imwrite(path, cv2.resize(cv2.imread(f), (w, h)))
        out.append(path)
    return out


@pytest.fixture(scope='module', params=['semantic', 'panoptic', 'instance'])
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    loaded = load_model(tiny_config(request.param), task=request.param)
    out = str(tmp_path_factory.mktemp('onnx') / f'{request.param}.onnx')
    info = export_model(loaded, out)
    return loaded, info


def test_agrees_with_pytorch_at_untraced_sizes(exported, images):
    loaded, info = exported
    session = ort.InferenceSession(info['path'],
                                   providers=['CPUExecutionProvider'])
    names = [o.name for o in session.get_outputs()]
    assert names == info['outputs']
    for path in images:
        image = cv2.imread(path)
        ours = dict(zip(names, session.run(None, {'image': image})))
        ref = torch_predict(loaded, image)
        head = (loaded.model.decode_head if loaded.task == 'semantic' else
                loaded.model.panoptic_head)
        result = compare(loaded.task, ours, ref, head.num_classes)
        assert result['ok'], result
        h, w = image.shape[:2]
        if loaded.task == 'semantic':
            assert ours['labels'].shape == (h, w)
            assert result['pixel_agreement'] == 1.0
        elif loaded.task == 'panoptic':
            assert ours['panoptic'].shape == (h, w)
            assert result['segments'] >= 2  # a non-trivial map compared
            assert result['pixel_agreement'] == 1.0
        else:
            assert ours['masks'].shape[1:] == (h, w)
            assert result['instances'] == 20 and result['min_mask_iou'] == 1
            assert (np.diff(ours['scores']) <= 0).all()  # best first


def test_metadata_describes_the_file(exported):
    loaded, info = exported
    meta = read_metadata(info['path'])
    assert meta['m2f_task'] == loaded.task and meta['m2f_format'] == '1'
    classes = json.loads(meta['m2f_classes'])
    palette = json.loads(meta['m2f_palette'])
    if loaded.task == 'semantic':
        assert classes[:2] == ['background', 'disc'] and len(classes) == 6
        assert meta['m2f_num_things'] == '0'
    else:
        assert classes[:2] == ['disc', 'square']
        expected_things = 5
        assert int(meta['m2f_num_things']) == expected_things
    assert len(palette) == len(classes)
    assert json.loads(meta['m2f_outputs']) == info['outputs']
    spec = PreprocessSpec.from_config(loaded.cfg, loaded.family)
    assert json.loads(meta['m2f_preprocess']) == json.loads(
        json.dumps(spec.to_dict()))
    assert meta['m2f_channel_order'] == 'bgr'


def test_export_leaves_the_model_as_it_was(exported, images):
    """No module is swapped or switched: the PyTorch results after export
    equal a fresh model's with the same weights."""
    loaded, _ = exported
    fresh = load_model(loaded.cfg, task=loaded.task)
    fresh.model.load_state_dict(loaded.model.state_dict())
    image = cv2.imread(images[0])
    a, b = torch_predict(loaded, image), torch_predict(fresh, image)
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_slide_mode_is_refused_with_the_whole_image_way(tmp_path):
    cfg = tiny_config('semantic')
    cfg.model.test_cfg = dict(mode='slide', crop_size=(64, 64),
                              stride=(48, 48))
    with pytest.raises(ValueError, match='--whole'):
        load_model(cfg)
    loaded = load_model(cfg, whole=True)
    assert loaded.model.test_cfg['mode'] == 'whole'


def test_task_must_fit_the_model():
    with pytest.raises(ValueError, match='exports semantic'):
        load_model(tiny_config('semantic'), task='panoptic')
    with pytest.raises(ValueError, match='panoptic or instance'):
        load_model(tiny_config('panoptic'), task='semantic')


def test_failed_export_writes_nothing(tmp_path):
    loaded = load_model(tiny_config('semantic'))
    out = str(tmp_path / 'model.onnx')
    with pytest.raises(ValueError, match='opset 15'):
        export_model(loaded, out, opset=15)
    assert os.listdir(tmp_path) == []


def test_command_line_check_and_errors(tmp_path, images, capsys):
    out = str(tmp_path / 'sem.onnx')
    cfg = tiny_config('semantic')
    cfg_file = str(tmp_path / 'tiny.py')
    cfg.dump(cfg_file)
    assert export_main([cfg_file, '--out', out, '--with-scores', '--check',
                        *images]) == 0
    text = capsys.readouterr().out
    assert 'outputs [\'labels\', \'scores\']' in text
    assert '2 images -> OK' in text
    assert export_main([cfg_file, '--out', out, '--task', 'instance']) == 2
    assert 'exports semantic' in capsys.readouterr().err


def test_runtime_runs_the_exported_file(exported, images, tmp_path):
    """m2f_deploy on the real file: the same result as onnxruntime directly,
    and the standard files."""
    from m2f_deploy import Segmenter
    loaded, info = exported
    seg = Segmenter(info['path'])
    assert seg.task == loaded.task
    result = seg(images[1])
    image = cv2.imread(images[1])
    session = ort.InferenceSession(info['path'],
                                   providers=['CPUExecutionProvider'])
    direct = dict(zip(info['outputs'], session.run(None, {'image': image})))
    if loaded.task == 'semantic':
        assert np.array_equal(result.labels, direct['labels'])
    elif loaded.task == 'panoptic':
        assert np.array_equal(result.panoptic, direct['panoptic'])
        assert len(result.segments) == len(direct['segments'])
    else:
        assert np.array_equal(result.masks, direct['masks'])
        assert np.array_equal(result.labels, direct['labels'])
    written = result.save(str(tmp_path), name='img')
    assert written and all(osp.getsize(p) > 0 for p in written)


def test_instances_of_equal_scores_pair_by_their_masks():
    """Two instances of a class whose scores tie to 1e-7 may come out in
    either order: the check pairs them by mask, not by score."""
    masks = np.zeros((2, 10, 10), bool)
    masks[0, :5], masks[1, 5:] = True, True
    ref = dict(labels=np.array([3, 3]), scores=np.array([0.5, 0.5000001]),
               masks=masks)
    ours = dict(labels=np.array([3, 3]), scores=np.array([0.5000001, 0.5]),
                masks=masks[::-1].copy())
    result = compare('instance', ours, ref, 5)
    assert result['ok'] and result['min_mask_iou'] == 1.0
    ours['masks'][0, 0, 0] = ~ours['masks'][0, 0, 0]  # still pairs right
    assert compare('instance', ours, ref, 5)['min_mask_iou'] > 0.95
    ours['labels'] = np.array([3, 4])
    assert not compare('instance', ours, ref, 5)['ok']


def test_command_line_refuses_bad_paths_before_exporting(tmp_path, capsys):
    cfg_file = str(tmp_path / 'tiny.py')
    tiny_config('semantic').dump(cfg_file)
    assert export_main([cfg_file, '--out', str(tmp_path / 'm.onnx'),
                        '--check', str(tmp_path / 'missing.png')]) == 2
    assert '--check image not found' in capsys.readouterr().err
    assert export_main([cfg_file, '--out', str(tmp_path)]) == 2
    assert 'is a folder' in capsys.readouterr().err
    assert not osp.exists(tmp_path / 'm.onnx')
