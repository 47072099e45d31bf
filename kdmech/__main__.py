import sys

from kdmech.cli import main

sys.exit(main())
