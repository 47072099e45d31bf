"""Distil one student: the same code as `kdmech distill` (options and --config alike).

    python train/distill.py --config configs/distill/default.yaml \
        --config configs/students/depth-0.5.yaml --teacher runs/teacher --out runs/mine
"""

import sys

from kdmech.cli import main

sys.exit(main(["distill", *sys.argv[1:]]))
