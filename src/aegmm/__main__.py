"""python -m aegmm (so that `torchrun -m aegmm fit ...` works)."""

from .cli import main

raise SystemExit(main())
