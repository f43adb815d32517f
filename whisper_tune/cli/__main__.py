"""`python -m whisper_tune.cli ...` (also what torchrun / accelerate launch run: `-m whisper_tune.cli train ...`)."""

import sys

from whisper_tune.cli import main

sys.exit(main())
