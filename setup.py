"""m2f_plugin: Mask2Former for MMSegmentation 1.x, as a plugin.

OpenMMLab convention: the light dependencies are ``install_requires``; the heavy
OpenMMLab packages (mmcv builds from source for ~15 minutes) are listed in
``requirements/mminstall.txt`` for ``mim install`` and checked at import time, so
installing this package never rebuilds a working mmcv.
"""
import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# runs m2f_plugin_config_names.install() at interpreter start-up (see there)
STARTUP_PTH = 'm2f_plugin-config-names.pth'

HERE = osp.dirname(osp.abspath(__file__))


def read_requirements(name):
    """Requirement lines of ``requirements/<name>``, comments dropped."""
    with open(osp.join(HERE, 'requirements', name)) as f:
        lines = [line.split('#')[0].strip() for line in f]
    return [line for line in lines if line]


def get_version():
    scope = {}
    with open(osp.join(HERE, 'm2f_plugin', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def add_mim_extension():
    """Put configs/ and tools/ under ``m2f_plugin/.mim`` where mim looks.

    Symlinks for an editable install (edits show at once), copies for a
    wheel or sdist.
    """
    if any(cmd in sys.argv for cmd in ('develop', 'editable_wheel')):
        mode = 'symlink'
    elif any(cmd in sys.argv for cmd in ('sdist', 'bdist_wheel', 'build',
                                         'install')):
        mode = 'copy'
    else:
        return
    mim_dir = osp.join(HERE, 'm2f_plugin', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in ('configs', 'tools'):
        src, dst = osp.join(HERE, name), osp.join(mim_dir, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_dir), dst)
        else:
            shutil.copytree(src, dst)


class BuildPyWithStartup(build_py):
    """Also put the start-up ``.pth`` file at the top of the wheel, so it is
    installed into site-packages next to the packages."""

    def run(self):
        super().run()
        self.copy_file(osp.join(HERE, STARTUP_PTH),
                       osp.join(self.build_lib, STARTUP_PTH))

    def get_outputs(self, *args, **kwargs):
        return super().get_outputs(*args, **kwargs) + [
            osp.join(self.build_lib, STARTUP_PTH)]


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='m2f_plugin',
        version=get_version(),
        description='Mask2Former (masked-attention mask transformer) as a '
        'plugin for MMSegmentation 1.x and MMDetection 3.x',
        long_description=open(osp.join(HERE, 'README.md')).read(),
        long_description_content_type='text/markdown',
        license='Apache-2.0',
        python_requires='>=3.9',
        # m2f_plugin, m2f_deploy (the runtime: no torch) and projects_ops
        packages=find_packages(exclude=('tests', 'tests.*', 'configs',
                                        'tools')),
        py_modules=['m2f_plugin_config_names'],
        cmdclass={'build_py': BuildPyWithStartup},
        include_package_data=True,
        package_data={'m2f_plugin': ['.mim/configs/**/*.py',
                                     '.mim/tools/*.py']},
        install_requires=read_requirements('runtime.txt'),
        extras_require={
            'mim': read_requirements('mminstall.txt'),
            'tests': read_requirements('tests.txt'),
            # m2f_deploy alone: run exported models without torch/toolboxes
            'deploy': read_requirements('deploy.txt'),
        },
        zip_safe=False,
    )
