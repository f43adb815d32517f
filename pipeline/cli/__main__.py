"""`python -m pipeline.cli ...` (also what torchrun / accelerate launch run: `-m pipeline.cli train ...`)."""

import sys

from . import main

sys.exit(main())
