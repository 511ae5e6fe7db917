"""m2f_plugin: Mask2Former for MMSegmentation 1.x as a plugin.

Importing the package (or ``custom_imports=dict(imports=['m2f_plugin'])``)
checks the OpenMMLab stack, makes mmengine's checkpoints load on torch >= 2.6,
and registers every module in mmseg's registries and in mmdet's.
"""
from importlib.util import find_spec

# first, so that nothing imported below prints a known-harmless warning
from .utils.warning_filters import install_warning_filters

install_warning_filters()

import m2f_plugin_config_names  # noqa: E402

# mmseg::/mmdet:: configs resolve under either toolbox family
m2f_plugin_config_names.install()

from .utils.version_check import check_openmmlab_stack  # noqa: E402

check_openmmlab_stack()

from .utils.checkpoint_compat import allow_mmengine_checkpoints  # noqa: E402

allow_mmengine_checkpoints()

from .utils.pretrained_urls import follow_installed_family  # noqa: E402

follow_installed_family()  # OpenMMLab-hosted weights from the installed family

from . import datasets, engine, evaluation, models, visualization  # noqa: E402,F401  (registers)


def _accel_present() -> bool:
    """Whether the opt-in ``accel`` package is installed. Absent, the model
    works as before; present, it is imported, so an error inside it shows."""
    try:
        return find_spec(f'{__name__}.accel') is not None
    except ImportError:  # an import hook that refuses it
        return False


if _accel_present():  # registers M2FGraphedHead, M2FEncoderDecoder, the hook
    from .accel import (  # noqa: E402,F401
        compile_hook,
        graphed_head,
        graphed_segmentor,
    )
from .registry import register_in_mmdet  # noqa: E402

register_in_mmdet()  # the same classes under mmdet's scope
from .version import __version__  # noqa: E402

__all__ = ['__version__']
