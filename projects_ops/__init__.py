"""Custom operators for m2f_plugin, kept outside the installed package.

* :mod:`projects_ops.msda_triton`: multi-scale deformable attention in Triton.

Importable from the repository root (it is on ``sys.path`` when running
``python -m pytest`` or a script with ``PYTHONPATH=.``).
"""
