"""deploy_test: the config's own dataloader and metrics, PyTorch beside
onnxruntime, on a small generated set."""
from __future__ import annotations

import os.path as osp

import pytest
import torch

from m2f_plugin.export.exporter import export_model, load_model
from m2f_plugin.tools import deploy_test as tool
from tests.helpers.export_models import tiny_config


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    from m2f_plugin.datasets import generate_synthetic_shapes
    return generate_synthetic_shapes(
        str(tmp_path_factory.mktemp('shapes') / 'root'), num_train=1,
        num_val=4, size=96, seed=1)


def _exported(task: str, data_root: str, folder, seed: int = 0):
    """Config file, checkpoint and exported file(s) of a tiny model."""
    cfg = tiny_config(task, data_root)
    cfg_file = str(folder / f'{task}.py')
    cfg.dump(cfg_file)
    torch.manual_seed(seed)
    loaded = load_model(cfg_file, task=task)
    ckpt = str(folder / f'{task}.pth')
    torch.save({'state_dict': loaded.model.state_dict()}, ckpt)
    files = [export_model(loaded, str(folder / f'{task}.onnx'))['path']]
    if task == 'panoptic':  # the same detector's instances too
        files.append(export_model(load_model(cfg_file, ckpt, 'instance'),
                                  str(folder / 'instance.onnx'))['path'])
    return cfg_file, ckpt, files


def test_semantic_metrics_agree_and_a_wrong_prediction_fails(
        data_root, tmp_path, monkeypatch, capsys):
    cfg_file, ckpt, files = _exported('semantic', data_root, tmp_path)
    r = tool.deploy_test(cfg_file, ckpt, files)
    assert r['images'] == 4 and r['left_out'] == []
    assert set(r['torch']) == set(r['onnx']) >= {'mIoU', 'aAcc', 'mDice'}
    for key, value in r['torch'].items():
        assert abs(r['onnx'][key] - value) <= 0.1, key
    assert tool.main([cfg_file, '--checkpoint', ckpt, '--onnx', *files]) == 0
    assert '-> OK' in capsys.readouterr().out

    # a deployment that predicts the wrong class is caught
    right = tool._as_predictions

    def shifted(task, out, sample):
        out = dict(out, labels=(out['labels'] + 1) % 6)
        right(task, out, sample)

    monkeypatch.setattr(tool, '_as_predictions', shifted)
    assert tool.main([cfg_file, '--checkpoint', ckpt, '--onnx', *files]) == 1
    assert '-> FAIL' in capsys.readouterr().out


def test_panoptic_and_instance_files_together(data_root, tmp_path):
    cfg_file, ckpt, files = _exported('panoptic', data_root, tmp_path)
    r = tool.deploy_test(cfg_file, ckpt, files)
    # the detector's semantic metric has no exported file: named, left out
    assert r['left_out'] == ['M2FSemSegMetric']
    assert {'coco_panoptic/PQ', 'coco/segm_mAP'} <= set(r['torch'])
    # (random weights score ~0 here; the pixel-level agreement of the same
    # graphs is in test_export_tasks, the trained demo models' in the docs)
    for key, value in r['torch'].items():
        assert abs(r['onnx'][key] - value) <= 0.1, key


def test_a_file_of_another_family_is_refused(data_root, tmp_path, capsys):
    sem_cfg, sem_ckpt, _ = _exported('semantic', data_root, tmp_path)
    _, _, det_files = _exported('panoptic', data_root, tmp_path)
    assert tool.main([sem_cfg, '--checkpoint', sem_ckpt, '--onnx',
                      det_files[0]]) == 2
    err = capsys.readouterr().err
    assert 'is a panoptic model but the config is an mmseg one' in err
    assert osp.isfile(det_files[0])
