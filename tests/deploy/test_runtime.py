"""m2f_deploy: the ONNX runtime without torch, on small synthetic models.

The fake models (tests/deploy/fake_models.py) compute their outputs from
channel thresholds, so every output value, file and message is checked
exactly. pycocotools is only the reference for the COCO formats here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from pycocotools import mask as coco_mask

from m2f_deploy import (
    InstanceResult,
    PanopticResult,
    Segmenter,
    SemanticResult,
    decode_rle,
    encode_rle,
    ids_to_rgb,
    rgb_to_ids,
)
from m2f_deploy.cli import main
from m2f_deploy.formats import rle_area
from tests.deploy import fake_models as fm

ROOT = Path(__file__).resolve().parents[2]
EXPORT_HINT = ('python -m m2f_plugin.tools.export CONFIG --checkpoint CKPT '
               '--out model.onnx')
H, W = 40, 60
PAN_CLASSES = ['person', 'car', 'sky', 'road']  # 2 things, then stuff
# (channel, threshold, id): sky, road, car (instance 2), person (instance 1)
PAN_RULES = [(1, 127, 2), (2, 127, 3), (0, 100, 2001), (0, 200, 1000)]
# (id, class, score) by id; 3001 never occurs, so the model drops it
PAN_SEGMENTS = [(2, 2, 0.9), (3, 3, 0.8), (1000, 0, 0.95), (2001, 1, 0.7),
                (3001, 1, 0.4)]


def scene() -> np.ndarray:
    """A BGR test image with known regions per channel."""
    image = np.zeros((H, W, 3), np.uint8)
    image[5:20, 10:30, 0] = 255  # B > 200
    image[0:5, 50:60, 0] = 150  # 100 < B <= 200
    image[15:35, 20:50, 1] = 150  # G
    image[30:40, :, 2] = 200  # R
    return image


def expected_semantic(image: np.ndarray) -> np.ndarray:
    return ((image[..., 0] > 127).astype(np.int64)
            + (image[..., 1] > 127).astype(np.int64))


def expected_panoptic(image: np.ndarray) -> np.ndarray:
    out = np.full(image.shape[:2], len(PAN_CLASSES), np.int64)
    for channel, threshold, seg_id in PAN_RULES:
        out[image[..., channel] > threshold] = seg_id
    return out


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp('models')
    return {
        'semantic': fm.semantic_model(str(folder / 'semantic.onnx')),
        'panoptic': fm.panoptic_model(str(folder / 'panoptic.onnx'),
                                      PAN_CLASSES, 2, PAN_RULES, PAN_SEGMENTS),
        'instance': fm.instance_model(str(folder / 'instance.onnx')),
    }


@pytest.fixture
def image_file(tmp_path):
    path = str(tmp_path / 'scene.png')
    cv2.imwrite(path, scene())
    return path


def files_in(folder) -> list:
    return sorted(os.listdir(folder))


# ------------------------------------------------------------ semantic
def test_three_line_usage_semantic(models, image_file, tmp_path):
    seg = Segmenter(models['semantic'])
    result = seg(image_file)
    out = tmp_path / 'out'
    written = result.save(str(out), name='scene')

    assert isinstance(result, SemanticResult) and seg.task == 'semantic'
    assert result.labels.dtype == np.int64
    np.testing.assert_array_equal(result.labels, expected_semantic(scene()))
    assert sorted(os.path.basename(p) for p in written) == files_in(out) == [
        'scene_labels.png', 'scene_overlay.png']
    labels_png = cv2.imread(str(out / 'scene_labels.png'), cv2.IMREAD_UNCHANGED)
    assert labels_png.dtype == np.uint8
    np.testing.assert_array_equal(labels_png, expected_semantic(scene()))
    overlay = cv2.imread(str(out / 'scene_overlay.png'))
    assert overlay.shape == (H, W, 3) and not np.array_equal(overlay, scene())


def test_semantic_scores_and_uint16_labels(tmp_path):
    # 300 classes: labels = B + 44 reach 299, beyond uint8
    model = fm.semantic_model(str(tmp_path / 'm.onnx'), num_classes=300,
                              mode='value', scores=True)
    image = scene()
    result = Segmenter(model)(image)
    result.save(str(tmp_path), 'big', overlay=False)

    expected = image[..., 0].astype(np.int64) + 44
    np.testing.assert_array_equal(result.labels, expected)
    assert result.scores.shape == (300, H, W)
    np.testing.assert_array_equal(result.scores.argmax(0), expected)
    png = cv2.imread(str(tmp_path / 'big_labels.png'), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16
    np.testing.assert_array_equal(png, expected)


def test_channel_order(models, image_file, tmp_path):
    bgr = scene()
    rgb_model = Segmenter(fm.semantic_model(str(tmp_path / 'rgb.onnx'),
                                            channel_order='rgb'))
    # an 'rgb' model sees R first: files (BGR) and BGR arrays are converted
    want_rgb = expected_semantic(bgr[..., ::-1])
    np.testing.assert_array_equal(rgb_model(image_file).labels, want_rgb)
    np.testing.assert_array_equal(rgb_model(bgr).labels, want_rgb)
    np.testing.assert_array_equal(
        rgb_model(bgr[..., ::-1].copy(), channel_order='rgb').labels, want_rgb)
    # a 'bgr' model given an RGB array with channel_order='rgb'
    bgr_model = Segmenter(models['semantic'])
    result = bgr_model(np.ascontiguousarray(bgr[..., ::-1]), channel_order='rgb')
    np.testing.assert_array_equal(result.labels, expected_semantic(bgr))
    np.testing.assert_array_equal(result.image, bgr)  # kept as BGR
    with pytest.raises(ValueError, match="'bgr' or 'rgb'"):
        bgr_model(bgr, channel_order='RGB ')


def test_non_contiguous_arrays(models):
    seg = Segmenter(models['semantic'])
    big = np.repeat(np.repeat(scene(), 2, axis=0), 2, axis=1)
    for image in (big[::2, ::2], np.asfortranarray(scene())):
        assert not image.flags.c_contiguous
        np.testing.assert_array_equal(seg(image).labels,
                                      expected_semantic(scene()))


# ------------------------------------------------------------ panoptic
def test_panoptic_files(models, image_file, tmp_path):
    result = Segmenter(models['panoptic'], task='panoptic')(image_file)
    result.save(str(tmp_path), 'scene')
    expected = expected_panoptic(scene())

    assert isinstance(result, PanopticResult)
    assert result.panoptic.dtype == np.int32
    np.testing.assert_array_equal(result.panoptic, expected)
    assert [(s['id'], s['category_id'], s['category_name'], s['isthing'])
            for s in result.segments] == [
        (2, 2, 'sky', False), (3, 3, 'road', False), (1000, 0, 'person', True),
        (2001, 1, 'car', True)]
    assert [s['area'] for s in result.segments] == [
        int((expected == s['id']).sum()) for s in result.segments]

    bgr = cv2.imread(str(tmp_path / 'scene_panoptic.png'), cv2.IMREAD_UNCHANGED)
    rgb = bgr[..., ::-1].astype(np.int64)
    coco_ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]
    with open(tmp_path / 'scene_segments.json') as f:
        annotation = json.load(f)
    assert annotation['file_name'] == 'scene_panoptic.png'
    infos = annotation['segments_info']
    assert [i['id'] for i in infos] == [1, 2, 3, 4]
    for info, seg in zip(infos, result.segments):
        mask = expected == seg['id']
        np.testing.assert_array_equal(coco_ids == info['id'], mask)
        ys, xs = np.nonzero(mask)
        assert info['area'] == mask.sum()
        assert info['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                ys.max() - ys.min() + 1]
        assert (info['category_id'], info['category_name'], info['isthing'],
                info['iscrowd']) == (seg['category_id'], seg['category_name'],
                                     int(seg['isthing']), 0)
        assert info['score'] == pytest.approx(seg['score'])
    np.testing.assert_array_equal(coco_ids == 0, expected == len(PAN_CLASSES))


def test_panoptic_stuff_class_zero_is_not_void(tmp_path):
    # a stuff class 0 has id 0 in the model's map, which COCO reads as void
    model = fm.panoptic_model(str(tmp_path / 'm.onnx'), ['wall', 'floor'], 0,
                              [(0, 127, 0), (1, 127, 1)],
                              [(0, 0, 0.9), (1, 1, 0.8)])
    result = Segmenter(model)(scene())
    ids, annotation = result.to_coco('scene')
    wall = (scene()[..., 0] > 127) & ~(scene()[..., 1] > 127)
    assert wall.any()
    assert (ids[wall] == 1).all()
    assert (ids[result.panoptic == 2] == 0).all()  # void
    assert annotation['segments_info'][0]['category_name'] == 'wall'


# ------------------------------------------------------------ instance
def test_instance_files(models, image_file, tmp_path):
    result = Segmenter(models['instance'])(image_file)
    result.save(str(tmp_path), 'scene')
    image = scene()
    masks = np.stack([image[..., 0] > 127, image[..., 1] > 127])

    assert isinstance(result, InstanceResult)
    np.testing.assert_array_equal(result.masks, masks)
    np.testing.assert_array_equal(result.labels, [0, 1])
    with open(tmp_path / 'scene_instances.json') as f:
        dets = json.load(f)
    assert len(dets) == 2
    for det, mask, box in zip(dets, masks, result.boxes):
        ys, xs = np.nonzero(mask)  # the fake's boxes: the masks' extents
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        x1, y1, x2, y2 = box.tolist()
        assert det['bbox'] == [x1, y1, x2 - x1, y2 - y1]
        assert det['image_id'] == 'scene'
        rle = det['segmentation']
        assert rle['size'] == [H, W]
        reference = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert rle['counts'] == reference['counts'].decode('ascii')
        np.testing.assert_array_equal(coco_mask.decode(rle), mask)
        assert coco_mask.area(rle) == mask.sum()
    assert [(d['category_id'], d['category_name']) for d in dets] == [
        (0, 'cat'), (1, 'dog')]
    assert [d['score'] for d in dets] == pytest.approx([0.9, 0.6])


def test_instance_none_found(models, tmp_path):
    result = Segmenter(models['instance'])(np.zeros((H, W, 3), np.uint8))
    result.save(str(tmp_path), 'empty')
    assert result.masks.shape == (0, H, W) and result.boxes.shape == (0, 4)
    assert json.loads((tmp_path / 'empty_instances.json').read_text()) == []
    assert files_in(tmp_path) == ['empty_instances.json', 'empty_overlay.png']


# ------------------------------------------------------------ formats
def test_rle_matches_pycocotools():
    rng = np.random.default_rng(0)
    masks = [np.zeros((5, 7)), np.ones((5, 7)), np.eye(6), np.ones((1, 1)),
             np.zeros((1, 1)), np.pad(np.ones((30, 40)), 25)]  # long runs
    masks += [rng.random(rng.integers(1, 50, 2)) < p
              for p in (0.02, 0.3, 0.5, 0.9, 0.99) for _ in range(8)]
    for mask in masks:
        mask = mask.astype(np.uint8)
        reference = coco_mask.encode(np.asfortranarray(mask))
        ours = encode_rle(mask)
        assert ours['counts'] == reference['counts'].decode('ascii')
        assert ours['size'] == list(reference['size'])
        np.testing.assert_array_equal(decode_rle(reference), mask)
        np.testing.assert_array_equal(coco_mask.decode(ours), mask)
        assert rle_area(ours) == coco_mask.area(reference) == mask.sum()


def test_panoptic_ids_to_rgb():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 2001, 256 ** 3 - 1]])
    rgb = ids_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb[0, 3].tolist() == [0, 1, 0]
    np.testing.assert_array_equal(rgb_to_ids(rgb), ids)
    with pytest.raises(ValueError):
        ids_to_rgb(np.array([[256 ** 3]]))


# ------------------------------------------------------------ bad input
@pytest.mark.parametrize('image, error, fix', [
    (np.zeros((H, W), np.uint8), ValueError, 'cv2.COLOR_GRAY2BGR'),
    (np.zeros((H, W, 1), np.uint8), ValueError, 'cv2.COLOR_GRAY2BGR'),
    (np.zeros((H, W, 4), np.uint8), ValueError, 'cv2.COLOR_BGRA2BGR'),
    (np.zeros((H, W, 3), np.float32), ValueError, '.astype(np.uint8)'),
    (np.zeros((H, W, 3), np.uint16), ValueError, '.astype(np.uint8)'),
    (np.zeros((4, W, 3), np.uint8), ValueError, 'at least 8'),
    (np.zeros((H, 100, 3), np.uint8), ValueError,
     'Segmenter(..., max_side=N)'),
    (np.zeros((H, W, 2), np.uint8), ValueError, '(H, W, 3)'),
    ([[0, 0, 0]], TypeError, 'NumPy array'),
], ids=['grey', 'grey1', 'rgba', 'float', 'uint16', 'small', 'large',
        'two', 'list'])
def test_bad_arrays(models, image, error, fix):
    seg = Segmenter(models['semantic'], max_side=64)
    with pytest.raises(error) as info:
        seg(image)
    assert fix in str(info.value)
    if fix.startswith('Segmenter'):
        assert 'max_side=64' in str(info.value)


def test_image_files(models, tmp_path):
    seg = Segmenter(models['semantic'])
    missing = str(tmp_path / 'missing.png')
    with pytest.raises(FileNotFoundError, match='missing.png'):
        seg(missing)
    broken = tmp_path / 'broken.jpg'
    broken.write_text('not an image')
    with pytest.raises(ValueError, match='broken.jpg'):
        seg(str(broken))
    with pytest.raises(ValueError, match='is a folder'):
        seg(str(tmp_path))
    # grey and RGBA files are read as BGR
    image = scene()
    cv2.imwrite(str(tmp_path / 'grey.png'), image[..., 0])
    cv2.imwrite(str(tmp_path / 'bgra.png'), cv2.cvtColor(image,
                                                         cv2.COLOR_BGR2BGRA))
    grey = seg(tmp_path / 'grey.png').labels
    np.testing.assert_array_equal(grey, 2 * (image[..., 0] > 127))
    np.testing.assert_array_equal(seg(str(tmp_path / 'bgra.png')).labels,
                                  expected_semantic(image))


def test_model_checks(models, tmp_path):
    plain = onnx.load(models['semantic'])
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / 'plain.onnx'))
    with pytest.raises(ValueError, match='not exported by m2f_plugin') as info:
        Segmenter(str(tmp_path / 'plain.onnx'))
    assert EXPORT_HINT in str(info.value)

    with pytest.raises(ValueError, match="format '2'.*reads format '1'"):
        Segmenter(fm.semantic_model(str(tmp_path / 'v2.onnx'), m2f_format='2'))
    with pytest.raises(ValueError, match="task 'instance'.*task='panoptic'"):
        Segmenter(models['instance'], task='panoptic')
    with pytest.raises(ValueError, match=r"lacks the outputs \['scores'\]"):
        Segmenter(fm.semantic_model(str(tmp_path / 'o.onnx'),
                                    m2f_outputs='["labels", "scores"]'))
    with pytest.raises(ValueError, match=r"m2f_outputs.*\['labels'\]"):
        Segmenter(fm.semantic_model(str(tmp_path / 'r.onnx'),
                                    m2f_outputs='["scores"]'))
    with pytest.raises(ValueError, match='m2f_classes'):
        Segmenter(fm.semantic_model(str(tmp_path / 'c.onnx'),
                                    m2f_classes='not json'))
    with pytest.raises(ValueError, match='m2f_palette'):
        Segmenter(fm.semantic_model(str(tmp_path / 'p.onnx'),
                                    m2f_palette='[[1, 2, 3]]'))
    for key, value in (('m2f_palette', '5'), ('m2f_task', 'depth'),
                       ('m2f_channel_order', 'BGR'), ('m2f_num_things', '9')):
        with pytest.raises(ValueError, match=key) as info:
            Segmenter(fm.semantic_model(str(tmp_path / 'k.onnx'),
                                        **{key: value}))
        assert EXPORT_HINT in str(info.value)
    with pytest.raises(FileNotFoundError, match='nothing.onnx'):
        Segmenter(str(tmp_path / 'nothing.onnx'))
    (tmp_path / 'junk.onnx').write_bytes(b'junk')
    with pytest.raises(ValueError, match='onnxruntime cannot load'):
        Segmenter(str(tmp_path / 'junk.onnx'))
    with pytest.raises(ValueError, match='expected one of'):
        Segmenter(models['semantic'], task='semantics')


def test_overwrite_refusal(models, tmp_path):
    result = Segmenter(models['semantic'])(scene())
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'scene_labels.png').write_bytes(b'not ours')
    with pytest.raises(FileExistsError) as info:
        result.save(str(out), 'scene')
    message = str(info.value)
    assert 'scene_labels.png' in message and 'overwrite=True' in message
    assert (out / 'scene_labels.png').read_bytes() == b'not ours'
    assert files_in(out) == ['scene_labels.png']  # nothing else, no temp files

    result.save(str(out), 'scene', overwrite=True)
    assert files_in(out) == ['scene_labels.png', 'scene_overlay.png']
    np.testing.assert_array_equal(
        cv2.imread(str(out / 'scene_labels.png'), cv2.IMREAD_UNCHANGED),
        expected_semantic(scene()))


# ------------------------------------------------------------ command line
def test_cli_images(models, tmp_path, capsys):
    folder = tmp_path / 'images'
    folder.mkdir()
    cv2.imwrite(str(folder / 'b.png'), scene())
    cv2.imwrite(str(folder / 'a.png'), scene()[::-1])
    (folder / 'notes.txt').write_text('not an image')
    out = tmp_path / 'out'

    assert main([models['panoptic'], str(folder), '--out', str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(folder / 'a.png'))
    assert 'a_segments.json' in lines[0]
    assert files_in(out) == sorted(
        f'{n}_{k}' for n in 'ab'
        for k in ('overlay.png', 'panoptic.png', 'segments.json'))

    # the same again: refused without --overwrite, accepted with it
    assert main([models['panoptic'], str(folder), '--out', str(out)]) == 1
    err = capsys.readouterr().err
    assert '--overwrite' in err and 'Traceback' not in err
    assert main([models['panoptic'], str(folder / 'a.png'), '--out', str(out),
                 '--overwrite', '--no-overlay']) == 0
    assert 'overlay' not in capsys.readouterr().out

    (folder / 'c.png').write_bytes(b'broken')  # one bad input among good ones
    out2 = tmp_path / 'out2'
    assert main([models['instance'], str(folder), '--out', str(out2)]) == 1
    captured = capsys.readouterr()
    assert 'c.png' in captured.err and 'Traceback' not in captured.err
    assert len(captured.out.splitlines()) == 2
    assert 'b_instances.json' in files_in(out2)

    for argv in ([models['semantic'], str(tmp_path / 'none.png')],
                 [str(tmp_path / 'none.onnx'), str(folder / 'a.png')]):
        assert main(argv + ['--out', str(out2)]) == 1
        assert 'none.' in capsys.readouterr().err


def test_cli_video(models, tmp_path, capsys):
    clip = str(tmp_path / 'clip.mp4')
    writer = cv2.VideoWriter(clip, cv2.VideoWriter_fourcc(*'mp4v'), 10,
                             (64, 48))
    for i in range(12):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[:, i * 4:i * 4 + 16] = 255
        writer.write(frame)
    writer.release()
    out = tmp_path / 'out'

    assert main([models['semantic'], clip, '--out', str(out), '--video']) == 0
    line = capsys.readouterr().out.strip()
    assert '12 frames' in line and 'frames/s' in line
    assert files_in(out) == ['clip_overlay.mp4']
    capture = cv2.VideoCapture(str(out / 'clip_overlay.mp4'))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert count == 12
    assert main([models['semantic'], clip, '--out', str(out), '--video',
                 '--no-overlay']) == 1


# ------------------------------------------------------------ dependencies
BLOCKER = textwrap.dedent('''
    import importlib.abc
    import sys

    BLOCKED = set(sys.argv[1].split(','))

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in BLOCKED:
                raise ImportError(f'No module named {name!r} (blocked)')
            return None

    sys.meta_path.insert(0, Blocker())
''')


def run_blocked(code: str, blocked: str, *args: str, cwd) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, '-c', BLOCKER + textwrap.dedent(code), blocked,
         *args], capture_output=True, text=True, cwd=str(cwd), env=env,
        timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_runs_without_torch_and_toolboxes(models, image_file, tmp_path):
    heavy = 'torch,mmcv,mmengine,mmseg,mmdet'
    stdout = run_blocked('''
        for name in BLOCKED:
            try:
                __import__(name)
            except ImportError:
                pass
            else:
                raise AssertionError(name + ' was importable')

        from m2f_deploy import Segmenter
        seg = Segmenter(sys.argv[2])
        result = seg(sys.argv[3])
        print(result.save('out', name='image'))

        import runpy
        sys.argv = ['m2f_deploy', sys.argv[2], sys.argv[3], '--out', 'cli']
        try:
            runpy.run_module('m2f_deploy', run_name='__main__')
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        print('loaded:', sorted(n for n in BLOCKED if n in sys.modules))
    ''', heavy, models['panoptic'], image_file, cwd=tmp_path)
    assert 'loaded: []' in stdout
    for folder, name in (('out', 'image'), ('cli', 'scene')):
        assert files_in(tmp_path / folder) == [
            f'{name}_overlay.png', f'{name}_panoptic.png',
            f'{name}_segments.json']


def test_missing_onnxruntime_and_opencv(models, tmp_path):
    stdout = run_blocked('''
        import numpy as np
        import m2f_deploy
        assert 'cv2' not in sys.modules  # imported only when needed
        print('rle:', m2f_deploy.encode_rle(np.eye(3))['counts'])
        for blocked in ('onnxruntime', 'cv2'):
            BLOCKED.clear()
            BLOCKED.add(blocked)
            try:
                m2f_deploy.Segmenter(sys.argv[2])
            except ImportError as exc:
                print(blocked, 'error:', exc)
    ''', 'onnxruntime,cv2', models['semantic'], cwd=tmp_path)
    assert 'rle: 013000' in stdout  # pycocotools' string for np.eye(3)
    assert 'onnxruntime error: m2f_deploy runs models with onnxruntime: ' \
        '`pip install onnxruntime`' in stdout
    assert 'cv2 error:' in stdout and 'pip install opencv-python' in stdout


def test_written_files_get_the_usual_mode_and_results_a_short_repr(tmp_path):
    """Results are readable by others as any new file (not mkstemp's
    0600); a result's repr is a line, not its arrays."""
    import os

    from m2f_deploy import SemanticResult
    labels = np.zeros((9, 11), np.int64)
    labels[2:5, 3:7] = 1
    result = SemanticResult(labels=labels, classes=['a', 'b'],
                            palette=[[0, 0, 0], [255, 0, 0]],
                            image=np.zeros((9, 11, 3), np.uint8))
    assert repr(result) == 'SemanticResult(labels=(9, 11), 2 classes)'
    umask = os.umask(0o022)
    try:
        for path in result.save(str(tmp_path), 'x'):
            assert os.stat(path).st_mode & 0o777 == 0o644, path
    finally:
        os.umask(umask)


def test_instance_overlay_leaves_out_low_scores_and_json_keeps_them(tmp_path):
    import json

    from m2f_deploy import InstanceResult
    masks = np.zeros((2, 200, 200), bool)
    masks[0, 10:40, 10:40] = masks[1, 150:190, 150:190] = True
    image = np.full((200, 200, 3), 128, np.uint8)
    result = InstanceResult(
        labels=np.array([0, 1]), scores=np.array([0.9, 0.1], np.float32),
        boxes=np.array([[10, 10, 40, 40], [150, 150, 190, 190]], np.float32),
        masks=masks, classes=['a', 'b'], palette=[[255, 0, 0], [0, 255, 0]],
        image=image)
    drawn = result.overlay()
    assert (drawn[20:30, 20:30] != 128).any()  # 0.9: drawn
    assert (drawn[140:200, 140:200] == 128).all()  # 0.1 < 0.3: left out
    result.draw_score_thr = 0.0
    assert (result.overlay()[160:180, 160:180] != 128).any()
    path = [p for p in result.save(str(tmp_path), 'x')
            if p.endswith('.json')][0]
    assert len(json.load(open(path))) == 2
