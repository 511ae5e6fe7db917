"""``python -m m2f_deploy``: see :mod:`m2f_deploy.cli`."""
from .cli import main

__all__ = ['main']

if __name__ == '__main__':
    raise SystemExit(main())
