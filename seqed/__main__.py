"""`python -m seqed ...` is the same as `seqed ...` (and what torchrun launches)."""

import sys

from seqed.cli import main

sys.exit(main())
