"""The demo's summary figure: curves from the run's logs, and input / ground
truth / prediction panels with exact pixels."""
from __future__ import annotations

import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from m2f_plugin.datasets import generate_synthetic_shapes
from m2f_plugin.datasets.synthetic_shapes import CLASSES, PALETTE
from m2f_plugin.tools import demo
from m2f_plugin.tools.demo import (
    LOSS_COLOUR,
    MIOU_COLOUR,
    colorize,
    load_scalars,
    make_summary_figure,
)

DEMO_CONFIG = osp.join(demo.REPO, demo.DEMO_CONFIG)

NUM_VAL = 5  # one more than the figure shows


def _hex_rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], np.uint8)


def _write_log(run_dir: str, records) -> None:
    os.makedirs(osp.join(run_dir, 'vis_data'), exist_ok=True)
    with open(osp.join(run_dir, 'vis_data', 'scalars.json'), 'w') as f:
        for record in records:
            f.write(json.dumps(record) + '\n')


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    """A small synthetic set, a randomly initialised demo-model checkpoint
    (with dataset_meta, as the runner saves it) and the config overrides."""
    from mmseg.registry import MODELS

    root = tmp_path_factory.mktemp('summary')
    data_root = str(root / 'data')
    generate_synthetic_shapes(data_root, num_train=1, num_val=NUM_VAL)
    cfg = Config.fromfile(DEMO_CONFIG)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    ckpt = str(root / 'random.pth')
    torch.save({'state_dict': model.state_dict(),
                'meta': {'dataset_meta': dict(classes=CLASSES,
                                              palette=PALETTE)}}, ckpt)
    # the data set's generator arguments match the files: nothing regenerated
    options = {'val_dataloader.dataset.data_root': data_root,
               'val_dataloader.dataset.num_train': 1,
               'val_dataloader.dataset.num_val': NUM_VAL}
    return dict(root=root, data_root=data_root, ckpt=ckpt, options=options)


def _crop(png: np.ndarray, box) -> np.ndarray:
    left, top, w, h = box
    return png[top:top + h, left:left + w]


def _read_png(path: str) -> np.ndarray:
    return cv2.imread(path, cv2.IMREAD_COLOR)[..., ::-1]  # RGB


def test_load_scalars_merges_runs_and_splits_train_val(tmp_path):
    _write_log(str(tmp_path / '20260101_000000'), [
        {'lr': 1e-4, 'loss': 9.0, 'step': 10},
        {'lr': 1e-4, 'loss': 8.0, 'step': 20},
        {'aAcc': 50.0, 'mIoU': 10.0, 'step': 20}])
    # a resumed run: its record for step 20 replaces the first run's
    _write_log(str(tmp_path / '20260101_010000'), [
        {'lr': 1e-4, 'loss': 7.5, 'step': 20},
        {'lr': 1e-4, 'loss': 6.0, 'step': 30},
        {'aAcc': 60.0, 'mIoU': 20.0, 'step': 30}])
    (tmp_path / 'test').mkdir()  # another folder without vis_data
    train, val = load_scalars(str(tmp_path))
    assert [(r['step'], r['loss']) for r in train] == [(10, 9.0), (20, 7.5),
                                                       (30, 6.0)]
    assert [(r['step'], r['mIoU']) for r in val] == [(20, 10.0), (30, 20.0)]
    assert load_scalars(str(tmp_path / 'test')) == ([], [])


def test_summary_figure_panels_and_curves(tiny_run, tmp_path):
    from mmseg.apis import inference_model, init_model

    work_dir = str(tmp_path / 'work')
    _write_log(osp.join(work_dir, '20260101_000000'),
               [{'lr': 3e-4, 'loss': 60.0 - i, 'step': 10 * i}
                for i in range(1, 11)]
               + [{'aAcc': 70.0, 'mIoU': 21.5, 'step': 50},
                  {'aAcc': 80.0, 'mIoU': 34.0, 'step': 100}])
    summary = make_summary_figure(work_dir, DEMO_CONFIG, tiny_run['ckpt'],
                                  cfg_options=tiny_run['options'])
    assert summary.path == osp.join(work_dir, 'summary.png')
    assert summary.has_curves
    png = _read_png(summary.path)
    height, width = png.shape[:2]

    # 4 rows of input / ground truth / prediction, 128 px images shown at 2x
    assert [osp.basename(p) for p in summary.images] == [
        f'{i:04d}.png' for i in range(4)]
    columns = ('input', 'ground truth', 'prediction')
    assert sorted(k for k in summary.panels if k[0] in columns) == sorted(
        (c, r) for c in columns for r in range(4))
    for (name, row), (left, top, w, h) in summary.panels.items():
        assert 0 <= left and left + w <= width and 0 <= top
        assert top + h <= height
        if name in columns:
            assert (w, h) == (256, 256)

    model = init_model(DEMO_CONFIG, tiny_run['ckpt'], device='cpu')
    classes_seen = set()
    for row, img_path in enumerate(summary.images):
        image = cv2.imread(img_path)[..., ::-1]
        ann = cv2.imread(img_path.replace('img_dir', 'ann_dir'),
                         cv2.IMREAD_UNCHANGED)
        pred = inference_model(model, img_path).pred_sem_seg.data[0].numpy()
        classes_seen |= set(np.unique(pred).tolist())
        for name, expected in (('input', image),
                               ('ground truth', colorize(ann, PALETTE)),
                               ('prediction', colorize(pred, PALETTE))):
            want = np.repeat(np.repeat(expected, 2, axis=0), 2, axis=1)
            got = _crop(png, summary.panels[(name, row)])
            assert np.array_equal(got, want), (name, row)
    # a random model still predicts several classes: the check above is not
    # one colour against one colour
    assert len(classes_seen) > 1

    # the curves are drawn in their plot areas
    loss = _crop(png, summary.panels[('loss', 0)])
    miou = _crop(png, summary.panels[('mIoU', 0)])
    assert (loss == _hex_rgb(LOSS_COLOUR)).all(-1).sum() > 100
    assert (miou == _hex_rgb(MIOU_COLOUR)).all(-1).sum() > 20


def test_summary_figure_without_log_has_no_curves(tiny_run, tmp_path):
    work_dir = str(tmp_path / 'never_trained')
    os.makedirs(work_dir)
    out = str(tmp_path / 'figs' / 'summary.png')
    summary = make_summary_figure(work_dir, DEMO_CONFIG, tiny_run['ckpt'],
                                  out_file=out, num_images=2,
                                  cfg_options=tiny_run['options'])
    assert summary.path == out and osp.isfile(out)
    assert not summary.has_curves
    assert len(summary.images) == 2
    png = _read_png(out)
    for key, colour in ((('loss', 0), LOSS_COLOUR), (('mIoU', 0), MIOU_COLOUR)):
        area = _crop(png, summary.panels[key])
        assert not (area == _hex_rgb(colour)).all(-1).any()
    # the images are there all the same
    assert summary.panels[('prediction', 1)][2:] == (256, 256)
