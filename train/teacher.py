"""Train the tiny teacher: the same code as `kdmech train-teacher` (options and --config alike).

    python train/teacher.py --config configs/teacher/tiny-gpt2.yaml --out runs/teacher
"""

import sys

from kdmech.cli import main

sys.exit(main(["train-teacher", *sys.argv[1:]]))
