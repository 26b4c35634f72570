"""One NT-Xent training step (batch 256, two views, width 0.25), float32 vs bf16 autocast, ONE thread.

PYTHONPATH=src python benchmarks/bf16_steptime.py 3      # 3 channels (1 for digits)
"""

import sys
import time

import torch

from aegmm.config import ModelConfig
from aegmm.contrastive import ContrastiveConfig, ContrastiveModel, nt_xent

torch.set_num_threads(1)

ch = int(sys.argv[1])
B = 256
m = ContrastiveModel(ModelConfig(channels=ch, width=0.25), ContrastiveConfig())
opt = torch.optim.Adam(m.parameters())
x = torch.randn(2 * B, ch, 32, 32)
for prec in ("float32", "bfloat16"):
    for i in range(3):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bfloat16"):
            p, _ = m(x)
        loss = nt_xent(p[:B].float(), p[B:].float(), 0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        print(prec, i, round(time.perf_counter() - t, 2), flush=True)
