"""Silence known-harmless third-party messages, one exact message at a time.

Without filters, a first run of the demo or the tests prints warnings users
cannot act on: deprecations inside mmengine, mmseg and setuptools, and
notices about defaults of mmseg's own configs. They drown the ones that
matter, so
:func:`install_warning_filters` (called when ``m2f_plugin`` is imported)
hides exactly these, and nothing else:

* Python warnings: one ``warnings.filterwarnings`` entry per message, each
  matching the message's start, its category and the module that issues it
  (:data:`WARNING_FILTERS`). ``pytest.ini`` repeats them for the tests
  (pytest resets the filters for every test).
* mmengine log records: mmengine prints some deprecations through its own
  logger, not ``warnings``. ``MMLogger`` instances live outside
  ``logging``'s manager (``logging.getLogger('mmengine')`` is a different
  object), so a filter is added to every ``MMLogger`` (those that exist and
  those created later, such as the Runner's); it drops WARNING records of
  the logger named ``mmengine`` whose message starts with one of
  :data:`LOG_FILTERS`.
"""
from __future__ import annotations

import logging
import re
import warnings
from typing import List, NamedTuple, Tuple, Type

__all__ = ['LOG_FILTERS', 'WARNING_FILTERS', 'MMEngineLogFilter',
           'install_warning_filters', 'python_warnings_option']


class WarningFilter(NamedTuple):
    """One silenced Python warning.

    Attributes:
        message: The start of the message, literally.
        category: Its exact category.
        modules: Modules it is issued from (as ``warnings`` attributes it:
            the caller's module for a ``stacklevel=2`` warning).
        why: Why it is harmless (documentation only).
    """

    message: str
    category: Type[Warning]
    modules: Tuple[str, ...]
    why: str


WARNING_FILTERS: Tuple[WarningFilter, ...] = (
    WarningFilter(
        'pkg_resources is deprecated as an API', UserWarning,
        # mmengine's is_installed() imports pkg_resources, then reloads it on
        # every call (the reload is attributed to importlib); mim imports it
        ('mmengine.utils.package_utils', 'importlib', 'mim.commands.list'),
        'setuptools<81 is pinned; mmengine and mim still use pkg_resources'),
    WarningFilter(
        "Failed to add <class 'mmengine.visualization.vis_backend."
        "LocalVisBackend'>, please provide the `save_dir` argument",
        UserWarning, ('mmengine.visualization.visualizer',),
        "MMSegInferencer builds mmseg's visualizer without a save_dir; it "
        'draws results itself'),
    WarningFilter(
        'The draw is False, it means that the hook for visualization will '
        'not take effect', UserWarning,
        ('mmseg.engine.hooks.visualization_hook',),
        "the default of mmseg's schedules (mim test --show-dir turns it on)"),
    WarningFilter(
        '`reduce_zero_label` will be deprecated, if you would like to ignore '
        'the zero label', UserWarning, ('mmseg.datasets.transforms.loading',),
        "mmseg's own ADE20K pipeline still passes it to LoadAnnotations"),
    WarningFilter(
        'faster_coco_eval is not installed, metrics will not be computed',
        UserWarning, ('mmdet.evaluation.metrics.faster_coco_metric',),
        "onedl-mmdetection's optional FasterCocoMetric, warned about at "
        "import; CocoMetric and CocoPanopticMetric do not use it"),
)

LOG_FILTERS: Tuple[Tuple[str, str], ...] = (
    # (start of the message, why it is harmless)
    ('"FileClient" will be deprecated in future.',
     "mmengine's CheckpointHook always builds one (kept for compatibility)"),
    ('"HardDiskBackend" is the alias of "LocalBackend" and the former will '
     'be deprecated in future.', 'the same FileClient, on a local path'),
    ('The prefix is not set in metric class IoUMetric.',
     "mmseg's IoUMetric has no default prefix; checkpoint selection "
     "(save_best='mIoU') relies on the bare metric names"),
    ('Failed to search registry with scope "mmseg" in the "function" '
     'registry tree.',
     'mmseg has no FUNCTIONS registry; the inferencer and dataloaders fall '
     "back to mmengine's (pseudo_collate), which is the right one"),
    ('Failed to search registry with scope "mmdet" in the "function" '
     'registry tree.',
     "the same for mmdet: DetInferencer's collate function is mmengine's"),
)


class MMEngineLogFilter(logging.Filter):
    """Drops the WARNING records of :data:`LOG_FILTERS` from the ``mmengine``
    logger; everything else passes."""

    def __init__(self) -> None:
        super().__init__()
        self.pattern = re.compile(
            '|'.join(re.escape(message) for message, _ in LOG_FILTERS))

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to keep ``record``."""
        return not (record.name == 'mmengine'
                    and record.levelno == logging.WARNING
                    and self.pattern.match(str(record.msg)) is not None)


def _install_python_filters() -> None:
    for f in WARNING_FILTERS:
        for module in f.modules:
            warnings.filterwarnings('ignore', message=re.escape(f.message),
                                    category=f.category,
                                    module=re.escape(module) + r'\Z')


def _install_log_filter() -> None:
    try:
        from mmengine.logging import MMLogger
    except ImportError:  # the stack check that runs next says what is wrong
        return
    log_filter = MMEngineLogFilter()

    def add(logger: logging.Logger) -> None:
        if not any(isinstance(f, MMEngineLogFilter) for f in logger.filters):
            logger.addFilter(log_filter)

    for logger in list(MMLogger._instance_dict.values()):
        add(logger)
    init = MMLogger.__init__
    if getattr(init, '_m2f_log_filter', False):
        return

    def __init__(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        add(self)

    __init__._m2f_log_filter = True  # type: ignore[attr-defined]
    MMLogger.__init__ = __init__  # type: ignore[method-assign]


def install_warning_filters() -> None:
    """Hide the known-harmless messages of :data:`WARNING_FILTERS` and
    :data:`LOG_FILTERS`. Idempotent; called on ``import m2f_plugin``."""
    _install_python_filters()
    _install_log_filter()


def python_warnings_option() -> str:
    """:data:`WARNING_FILTERS` as a ``PYTHONWARNINGS`` value, for child
    processes that do not import m2f_plugin (``mim`` itself).

    Returns:
        Comma-separated ``ignore:message:category:module`` entries (message
        and module are literal there, matched at the start and whole).
    """
    entries: List[str] = []
    for f in WARNING_FILTERS:
        # PYTHONWARNINGS splits on ':' and ','; keep the message up to either
        message = re.split('[:,]', f.message)[0]
        entries += [f'ignore:{message}:{f.category.__name__}:{module}'
                    for module in f.modules]
    return ','.join(entries)
