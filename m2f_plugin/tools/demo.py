"""The main job: a user's journey end to end on the embedded default.

1. generate the synthetic shapes set (seeded, no downloads),
2. ``mim train m2f_plugin <demo config>`` (mim's entry point, our tools),
3. ``mim test`` on the best checkpoint (mmseg's ``IoUMetric``),
4. ``MMSegInferencer(model=<config>, weights=<checkpoint>)`` on a val image,
   saving a coloured overlay PNG,
5. one summary figure (``<work-dir>/summary.png``): the training-loss and
   validation-mIoU curves from the run's logs, and input / ground truth /
   prediction for the first few validation images,

then print the mIoU and where every file is. ``--task panoptic|instance``
runs the same journey through mmdet's detector (PQ, mask AP and mIoU; see
``demo_detection``).

    python -m m2f_plugin.tools.demo [--task semantic|panoptic|instance]
        [--work-dir work_dirs/demo] [--iters N]
"""
from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

# the demo empties its work folder before each run: only a folder it made
_WORK_DIR_FIX = ('Pass --work-dir a new folder; the demo empties its work '
                 'folder before each run.')
# realpath: setup_env.sh links site-packages/m2f_plugin to the checkout
REPO = osp.dirname(osp.dirname(osp.dirname(osp.realpath(__file__))))
DEMO_CONFIG = 'configs/demo/mask2former_r18-tiny_1xb8-300it_synthetic-128x128.py'


def _mim() -> str:
    """The ``mim`` executable next to this interpreter (or on PATH)."""
    local = osp.join(osp.dirname(sys.executable), 'mim')
    found = local if osp.exists(local) else shutil.which('mim')
    if found is None:
        raise SystemExit('mim not found: run `bash scripts/setup_env.sh` (it '
                         'installs openmim into .venv)')
    return found


def _run(cmd: List[str]) -> None:
    from m2f_plugin.utils.warning_filters import python_warnings_option
    print('$ ' + ' '.join(cmd), flush=True)
    # mim itself does not import m2f_plugin: hand it the same filters
    env = dict(os.environ)
    env['PYTHONWARNINGS'] = ','.join(
        w for w in (env.get('PYTHONWARNINGS'), python_warnings_option()) if w)
    subprocess.run(cmd, check=True, env=env)


# ------------------------------------------------------------ summary figure

IGNORE_COLOUR = (255, 255, 255)  # ignore_index pixels in the ground truth
PANEL_SIDE = 256  # px; small images are enlarged by a whole factor (no blur)
COLUMNS = ('input', 'ground truth', 'prediction')
LEGEND = dict(frameon=False, columnspacing=1.2, handletextpad=0.5)
LOSS_COLOUR = '#1f77b4'
MIOU_COLOUR = '#d62728'


@dataclass
class SummaryFigure:
    """What :func:`make_summary_figure` wrote.

    Attributes:
        path: The PNG.
        panels: ``(column, row)`` -> ``(left, top, width, height)`` in PNG
            pixels, for the columns ``'input'``, ``'ground truth'``,
            ``'prediction'`` (row = index among the shown images) and the
            curves ``('loss', 0)``, ``('mIoU', 0)`` (their plot areas).
        images: The validation images shown, one per row.
        has_curves: Whether a training log was found (else the curve panels
            only say that there is none).
    """

    path: str
    panels: Dict[Tuple[str, int], Tuple[int, int, int, int]] = field(
        default_factory=dict)
    images: List[str] = field(default_factory=list)
    has_curves: bool = False


def find_logs(work_dir: str) -> List[str]:
    """The scalar logs of a run, oldest first: ``<work_dir>/<timestamp>/
    vis_data/scalars.json`` (written by ``LocalVisBackend``), or the
    LoggerHook's ``<timestamp>.json`` next to it if that is missing."""
    logs = []
    for run_dir in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data'))):
        stamp = osp.basename(osp.dirname(run_dir))
        for name in ('scalars.json', f'{stamp}.json'):
            if osp.isfile(osp.join(run_dir, name)):
                logs.append(osp.join(run_dir, name))
                break
    return logs


def load_scalars(work_dir: str) -> Tuple[List[dict], List[dict]]:
    """The training and validation records of a run's mmengine logs.

    Reads every log of :func:`find_logs` in order, so a resumed run gives
    one curve; a later record for the same step replaces the earlier one.

    Args:
        work_dir: The run's work_dir.

    Returns:
        ``(train, val)``: records (dicts with ``step``) sorted by step;
        training records carry ``loss``, validation records ``mIoU``. Both
        empty if the work_dir holds no log.
    """
    train: Dict[int, dict] = {}
    val: Dict[int, dict] = {}
    for path in find_logs(work_dir):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                record = json.loads(line)
                if 'step' not in record:
                    continue
                if 'loss' in record:
                    train[int(record['step'])] = record
                elif 'mIoU' in record:
                    val[int(record['step'])] = record
    return ([train[k] for k in sorted(train)], [val[k] for k in sorted(val)])


def colorize(label: np.ndarray, palette: Sequence[Sequence[int]],
             ignore_index: int = 255) -> np.ndarray:
    """Label map (H, W) -> RGB uint8 (H, W, 3) in the data set's palette.

    ``ignore_index`` is white; ids without a palette entry are black.
    """
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(palette)] = np.asarray(palette, np.uint8)[:256]
    if 0 <= ignore_index < 256:
        lut[ignore_index] = IGNORE_COLOUR
    return lut[np.clip(label, 0, 255).astype(np.uint8)]


def fit_panel(image: np.ndarray, side: int = PANEL_SIDE,
              nearest: bool = True) -> np.ndarray:
    """Scale an image to fit ``side`` x ``side``: enlarged by the largest
    whole factor (pixel repetition, so a panel shows exact colours), or
    shrunk (nearest neighbour for label maps, area for photos)."""
    h, w = image.shape[:2]
    if max(h, w) <= side:
        k = side // max(h, w)
        return np.repeat(np.repeat(image, k, axis=0), k, axis=1)
    import cv2
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return cv2.resize(image, size, interpolation=interp)


def _predict_val_images(config: Any, checkpoint: str, num_images: int,
                        cfg_options: Optional[Dict[str, Any]],
                        device: str) -> Tuple[List[dict], dict, int]:
    """Run the checkpoint on the first validation images, through the
    validation data set and pipeline (what ``mim test`` sees).

    Returns:
        (rows: dicts with ``path``, ``image``, ``gt``, ``pred``), the data
        set's metainfo, its ignore_index.
    """
    import mmcv
    import torch
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmseg.apis import init_model
    from mmseg.registry import DATASETS

    import m2f_plugin  # noqa: F401  (registers the model and data set)

    cfg = (copy.deepcopy(config) if isinstance(config, Config)
           else Config.fromfile(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    dataset = DATASETS.build(copy.deepcopy(cfg.val_dataloader.dataset))
    model = init_model(cfg, checkpoint, device=device)
    rows = []
    for i in range(min(num_images, len(dataset))):
        data = dataset[i]
        sample = data['data_samples']
        with torch.no_grad():
            pred = model.test_step(pseudo_collate([data]))[0]
        pred = pred.pred_sem_seg.data[0].cpu().numpy()
        gt = sample.gt_sem_seg.data[0].cpu().numpy()
        image = mmcv.imread(sample.img_path, 'color', channel_order='rgb')
        rows.append(dict(path=sample.img_path, image=image, gt=gt, pred=pred))
    return rows, dict(dataset.metainfo), getattr(dataset, 'ignore_index', 255)


def _draw_curve(ax: Any, steps: Sequence[float], values: Sequence[float],
                colour: str, ylabel: str, best: bool = False) -> None:
    ax.plot(steps, values, color=colour, marker='o' if len(steps) < 12 else None,
            markersize=4, linewidth=1.5)
    ax.set_xlabel('iteration')
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if best and len(values):
        i = int(np.argmax(values))
        ax.plot([steps[i]], [values[i]], marker='*', markersize=12,
                color=colour, linestyle='none', clip_on=False)
        ax.set_title(f'{ax.get_title()}: best {values[i]:.1f} at iteration '
                     f'{int(steps[i])}', fontsize=10)


def _legend_columns(handles: List[Any], max_width: float, dpi: int) -> int:
    """The most legend columns that fit in ``max_width`` pixels (measured on
    a scratch figure)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    scratch = Figure(dpi=dpi)
    renderer = FigureCanvasAgg(scratch).get_renderer()
    for ncol in range(len(handles), 1, -1):
        legend = scratch.legend(handles=handles, ncol=ncol, **LEGEND)
        fits = legend.get_window_extent(renderer).width <= max_width
        legend.remove()
        if fits:
            return ncol
    return 1


def _no_curve(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha='center', va='center', wrap=True,
            transform=ax.transAxes, color='0.35')
    ax.set_xticks([])
    ax.set_yticks([])


def make_summary_figure(work_dir: str, config: Union[str, Any],
                        checkpoint: str, out_file: Optional[str] = None,
                        num_images: int = 4,
                        cfg_options: Optional[Dict[str, Any]] = None,
                        device: str = 'cpu') -> SummaryFigure:
    """One PNG summing up a run: loss and mIoU curves, and input / ground
    truth / prediction for the first ``num_images`` validation images.

    The curves come from the run's mmengine logs (:func:`load_scalars`). A
    work_dir without a log is not an error (say, a converted checkpoint that
    was never trained here): the figure is written anyway and its curve
    panels say that no log was found (``has_curves`` is False).

    Predictions are the checkpoint's, through the config's validation data
    set and pipeline, on ``device``; label maps are drawn in the data set's
    ``palette`` (ignored pixels white), enlarged by a whole factor so every
    panel pixel is an exact class colour.

    Args:
        work_dir: The run's work_dir (holds ``<timestamp>/vis_data``).
        config: Config path or ``mmengine.Config`` (not modified).
        checkpoint: Checkpoint to predict with.
        out_file: Where to write the PNG (default
            ``<work_dir>/summary.png``).
        num_images: Validation images to show (fewer if the set is smaller).
        cfg_options: Config overrides, as ``--cfg-options`` (e.g.
            ``{'val_dataloader.dataset.data_root': 'data/x'}``).
        device: Inference device.

    Returns:
        The :class:`SummaryFigure` (path and panel positions).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    out_file = out_file or osp.join(work_dir, 'summary.png')
    train, val = load_scalars(work_dir)
    rows, metainfo, ignore_index = _predict_val_images(
        config, checkpoint, num_images, cfg_options, device)
    classes = list(metainfo.get('classes', []))
    palette = metainfo.get('palette') or [[0, 0, 0]] * len(classes)

    panels = []  # per row: fitted input, gt, prediction
    for row in rows:
        panels.append([fit_panel(row['image'], nearest=False),
                       fit_panel(colorize(row['gt'], palette, ignore_index)),
                       fit_panel(colorize(row['pred'], palette, ignore_index))])
    cell_w = max([p.shape[1] for r in panels for p in r] or [PANEL_SIDE])
    cell_h = max([p.shape[0] for r in panels for p in r] or [PANEL_SIDE])

    # layout in pixels (dpi 100), from the top
    dpi, margin, gap = 100, 20, 14
    title_h, curves_h, header_h, caption_h = 48, 250, 26, 20
    grid_w = 3 * cell_w + 2 * gap
    width = max(grid_w + 2 * margin, 760)
    shown = sorted({int(v) for r in rows for v in np.unique(
        np.concatenate([r['gt'].ravel(), r['pred'].ravel()]))})
    legend_ids = [c for c in shown if c < len(classes)]
    handles = [Patch(facecolor=np.asarray(palette[c]) / 255,
                     edgecolor='0.5', label=classes[c]) for c in legend_ids]
    handles.append(Patch(facecolor=np.asarray(IGNORE_COLOUR) / 255,
                         edgecolor='0.5', label=f'ignored ({ignore_index})'))
    legend_cols = _legend_columns(handles, width - 2 * margin, dpi)
    legend_h = 16 + 22 * -(-len(handles) // legend_cols)
    grid_top = title_h + curves_h + 30 + header_h
    row_h = caption_h + cell_h + gap
    height = grid_top + len(rows) * row_h + legend_h + margin
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)

    def box(left: float, top: float, w: float, h: float) -> List[float]:
        """Pixel box (from the top left) -> figure fraction rect."""
        return [left / width, 1 - (top + h) / height, w / width, h / height]

    config_name = (config if isinstance(config, str)
                   else getattr(config, 'filename', None) or 'config')
    fig.text(0.5, 1 - 8 / height, f'Mask2Former: {osp.basename(checkpoint)}',
             ha='center', va='top', fontsize=13, weight='bold')
    fig.text(0.5, 1 - 30 / height, osp.basename(config_name), ha='center',
             va='top', fontsize=9, color='0.35')
    layout: Dict[Tuple[str, int], Tuple[int, int, int, int]] = {}
    # curves: two plot areas side by side (room for tick labels around them)
    plot_w = (width - 2 * margin - 150) // 2
    plot_top, plot_h = title_h + 20, curves_h - 60
    loss_left = margin + 55
    miou_left = loss_left + plot_w + 95
    ax_loss = fig.add_axes(box(loss_left, plot_top, plot_w, plot_h))
    ax_miou = fig.add_axes(box(miou_left, plot_top, plot_w, plot_h))
    layout[('loss', 0)] = (loss_left, plot_top, plot_w, plot_h)
    layout[('mIoU', 0)] = (miou_left, plot_top, plot_w, plot_h)
    ax_loss.set_title('training loss', fontsize=11)
    ax_miou.set_title('validation mIoU (%)', fontsize=11)
    has_curves = bool(train or val)
    last_step = max([r['step'] for r in train + val] or [0])
    no_log = f'no training log in\n{work_dir}'
    logged = bool(find_logs(work_dir))
    if train:
        _draw_curve(ax_loss, [r['step'] for r in train],
                    [r['loss'] for r in train], LOSS_COLOUR, 'loss')
    else:
        _no_curve(ax_loss, 'no training loss logged yet' if logged else no_log)
    if val:
        _draw_curve(ax_miou, [r['step'] for r in val],
                    [r['mIoU'] for r in val], MIOU_COLOUR, 'mIoU', best=True)
    else:
        _no_curve(ax_miou, 'no validation results yet' if logged else no_log)
    for ax, records in ((ax_loss, train), (ax_miou, val)):
        if records:  # one iteration axis for both
            ax.set_xlim(0, last_step * 1.05)

    # image grid: exact pixels (figimage draws without resampling)
    grid_left = (width - grid_w) // 2
    for c, name in enumerate(COLUMNS):
        fig.text((grid_left + c * (cell_w + gap) + cell_w / 2) / width,
                 1 - (grid_top - 6) / height, name, ha='center',
                 va='bottom', fontsize=12, weight='bold')
    for r, (row, images) in enumerate(zip(rows, panels)):
        top = grid_top + r * row_h + caption_h
        valid = row['gt'] != ignore_index
        acc = ((row['pred'] == row['gt']) & valid).sum() / max(1, valid.sum())
        fig.text(grid_left / width, 1 - (top - 3) / height,
                 f'{osp.basename(row["path"])}: pixel accuracy '
                 f'{100 * acc:.1f}%', ha='left', va='bottom', fontsize=9)
        for c, (name, image) in enumerate(zip(COLUMNS, images)):
            left = grid_left + c * (cell_w + gap)
            h, w = image.shape[:2]
            fig.figimage(image, xo=left, yo=height - top - h, origin='upper')
            layout[(name, r)] = (left, top, w, h)

    fig.legend(handles=handles, loc='lower center', ncol=legend_cols, **LEGEND,
               bbox_to_anchor=(0.5, 4 / height))
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    fig.savefig(out_file, dpi=dpi)
    return SummaryFigure(path=out_file, panels=layout,
                         images=[r['path'] for r in rows],
                         has_curves=has_curves)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=osp.join(REPO, DEMO_CONFIG))
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/synthetic_shapes')
    parser.add_argument('--iters', type=int, default=None,
                        help='override the number of training iterations')
    parser.add_argument('--task', choices=['semantic', 'panoptic', 'instance'],
                        default='semantic',
                        help='semantic: mmseg segmentor (mIoU); panoptic / '
                        "instance: mmdet's Mask2Former detector with our head "
                        '(PQ, mask AP, mIoU)')
    args = parser.parse_args(argv)
    if args.task != 'semantic':
        from m2f_plugin.tools.demo_detection import run_detection_demo
        work_dir = (args.work_dir if args.work_dir != 'work_dirs/demo'
                    else f'work_dirs/demo_{args.task}')
        run_detection_demo(args.task, work_dir, args.data_root, args.iters,
                           _mim(), _run, REPO)
        return 0

    from m2f_plugin.datasets import generate_synthetic_shapes
    t0 = time.time()
    generate_synthetic_shapes(args.data_root)
    print(f'[demo] data ready in {args.data_root} ({time.time() - t0:.1f} s)')

    work_dir = osp.abspath(args.work_dir)
    # a fresh run each time (no stale "best"), never in someone else's folder
    from m2f_plugin.utils.owned_folder import fresh_owned_folder
    fresh_owned_folder(work_dir, 'm2f_demo', 'demo run', _WORK_DIR_FIX,
                       legacy_marker='summary.png')
    options = [f'train_dataloader.dataset.data_root={args.data_root}',
               f'val_dataloader.dataset.data_root={args.data_root}',
               f'test_dataloader.dataset.data_root={args.data_root}']
    if args.iters:
        options += [f'train_cfg.max_iters={args.iters}',
                    f'train_cfg.val_interval={max(1, args.iters // 3)}',
                    f'param_scheduler.0.end={args.iters}',
                    # about ten points on the summary figure's loss curve
                    'default_hooks.logger.interval='
                    f'{max(1, min(20, args.iters // 10))}']
    t0 = time.time()
    _run([_mim(), 'train', 'm2f_plugin', args.config, '--gpus', '0',
          '--work-dir', work_dir, '--cfg-options', *options])
    train_s = time.time() - t0
    best = sorted(glob.glob(osp.join(work_dir, 'best_mIoU_iter_*.pth')))
    if not best:
        raise SystemExit(f'no best_mIoU checkpoint in {work_dir}')
    ckpt = best[-1]

    test_dir = osp.join(work_dir, 'test')
    _run([_mim(), 'test', 'm2f_plugin', args.config, '--checkpoint', ckpt,
          '--gpus', '0', '--work-dir', test_dir, '--cfg-options', *options])
    with open(osp.join(test_dir, 'test_metrics.json')) as f:
        metrics = json.load(f)

    from mmseg.apis import MMSegInferencer

    import m2f_plugin  # noqa: F401
    image = osp.join(args.data_root, 'img_dir', 'val', '0000.png')
    out_dir = osp.join(work_dir, 'inference')
    inferencer = MMSegInferencer(model=args.config, weights=ckpt,
                                 device='cpu')
    inferencer(image, out_dir=out_dir, img_out_dir='vis', pred_out_dir='pred')
    overlays = sorted(glob.glob(osp.join(out_dir, 'vis', '*.png')))
    vis = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'vis_image')))
    summary = make_summary_figure(
        work_dir, args.config, ckpt,
        cfg_options={'val_dataloader.dataset.data_root': args.data_root})

    print('\n[demo] ==================== summary ====================')
    print(f'[demo] training: {train_s:.0f} s on CPU')
    print(f'[demo] best checkpoint: {ckpt}')
    print(f"[demo] mim test mIoU: {metrics['mIoU']:.2f}  mDice: "
          f"{metrics.get('mDice', float('nan')):.2f}  aAcc: "
          f"{metrics['aAcc']:.2f}")
    print(f'[demo] metrics: {osp.join(test_dir, "test_metrics.json")}')
    print(f'[demo] inferencer overlay: {overlays[0] if overlays else "none"}')
    print(f'[demo] training visualisations: {vis[-1] if vis else "none"}')
    print(f'[demo] summary figure (curves, input / ground truth / '
          f'prediction): {summary.path}')
    print(f'[demo] logs: {work_dir}')
    return 0


if __name__ == '__main__':
    os.chdir(os.getcwd())
    sys.exit(main())
