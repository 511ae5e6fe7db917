"""Write the embedded synthetic-shapes data set (seeded, no downloads).

    python -m m2f_plugin.tools.make_synthetic_data --out data/synthetic_shapes
"""
from __future__ import annotations

import argparse
from typing import List, Optional

from ..datasets import generate_synthetic_shapes


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/synthetic_shapes')
    parser.add_argument('--num-train', type=int, default=400)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--force', action='store_true')
    args = parser.parse_args(argv)
    root = generate_synthetic_shapes(args.out, args.num_train, args.num_val,
                                     args.size, args.seed, args.force)
    print(f'synthetic shapes written to {root}')


if __name__ == '__main__':
    main()
