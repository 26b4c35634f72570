"""`quality.py` with one of four short-schedule training tricks in every contrastive run of the
process: issue 13's last untried levers for the 15-minute CIFAKE budget.

    python benchmarks/training_probe.py warmup 2 --datasets cifake --tasks cifar10 --seeds 0 \\
        --methods aegmm --out /tmp/exp/warmup

- `warmup EPOCHS`: the learning rate rises linearly from 0 over the first EPOCHS epochs, times
  the run's cosine schedule (SimCLR warms up for 10 of its 100+ epochs at large batches).
- `ema DECAY`: an exponential moving average of the weights and batch-norm statistics, updated
  after every optimiser step, replaces the weights after the last epoch: the features, the
  last validation loss and the checkpoint are the average's.
- `zero-init 1`: each residual block's last batch-norm scale starts at 0, so every block starts
  as the identity (Goyal et al. 2017, torchvision's `zero_init_residual`); it draws no random
  numbers, so the rest of the network starts as in the default.
- `whiten-stem 1` (or `2`): the stem's 3x3 convolution starts as a patch-whitening filter bank,
  as in the fast CIFAR-10 training runs (Page 2018, Keller Jordan's airbench): the top half of its
  filters are the leading eigenvectors of the covariance of 3x3 patches of augmented views of up
  to 2,000 training images, each divided by the square root of its eigenvalue, the other half
  their negatives. 1: the filters train from there; 2: they stay fixed. The patches come from a
  generator of their own, so the run's other random numbers are the default's. The library's
  `stem_init` whiten / whiten-fixed train the same networks (tests/test_benchmarks.py checks it).

The patches wrap `aegmm.contrastive._Run` and `aegmm.nn.autoencoder.Encoder` for this process
only; quality.md records the command without the trick, and the NOTES beside committed results
give it. No `--cache`: its key does not know the patch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aegmm.contrastive as contrastive  # noqa: E402
import aegmm.nn.autoencoder as autoencoder  # noqa: E402
import quality  # noqa: E402
from aegmm.augment import augment  # noqa: E402
from aegmm.nn.whitening import whiten_conv  # noqa: E402
from common import number_argument  # noqa: E402

USAGE = (
    "usage: training_probe.py {warmup EPOCHS | ema DECAY | zero-init 1 | whiten-stem 1|2} "
    "[quality.py options, without --cache]"
)


def warmup_set_lr(epochs: float):
    """`_Run._set_lr` times a linear ramp from 0 to 1 over the first `epochs` epochs."""
    original = contrastive._Run._set_lr

    def set_lr(self, epoch: int, step: int, steps: int) -> None:
        original(self, epoch, step, steps)
        ramp = min(1.0, ((epoch - 1) * steps + step + 1) / max(epochs * steps, 1))
        for group in self.optimizer.param_groups:
            group["lr"] *= ramp

    return set_lr


def ema_train_epoch(decay: float):
    """`_Run.train_epoch` that keeps a moving average of the model's state after every optimiser
    step and loads it into the model after the last epoch."""
    original = contrastive._Run.train_epoch

    def train_epoch(self, images, train_idx, epoch: int) -> dict[str, float]:
        if not hasattr(self, "ema"):
            live = self.model.state_dict()  # detached views of the tensors training updates in place
            self.ema = {name: value.clone() for name, value in live.items()}
            pairs = [(self.ema[name], value) for name, value in live.items()]

            def update(optimizer, args, kwargs) -> None:
                with torch.no_grad():
                    for average, value in pairs:
                        if value.is_floating_point():
                            average.lerp_(value, 1 - decay)
                        else:  # the batch counters
                            average.copy_(value)

            self.optimizer.register_step_post_hook(update)
        losses = original(self, images, train_idx, epoch)
        if epoch == self.train.epochs:
            self.model.load_state_dict(self.ema)
        return losses

    return train_epoch


def zero_init_encoder():
    """`Encoder.__init__` followed by a zero scale on every residual block's last batch norm."""
    original = autoencoder.Encoder.__init__

    def init(self, config) -> None:
        original(self, config)
        for stage in self.stages:
            for block in stage:
                torch.nn.init.zeros_(block.bn2.weight)

    return init


def whiten_stem_train_epoch(mode: float):
    """`_Run.train_epoch` that first sets the stem's convolution to whitening filters (mode 2: and
    fixes them)."""
    original = contrastive._Run.train_epoch

    def train_epoch(self, images, train_idx, epoch: int) -> dict[str, float]:
        if not getattr(self, "whitened", False):
            conv = self.model.autoencoder.encoder.stem[0]
            rows = images[np.sort(train_idx[:2000])]
            x = self.normalizer.to_tensor(rows, self.device)
            generator = torch.Generator().manual_seed(12345)
            whiten_conv(conv, augment(x, self.policy, self.normalizer, generator))  # no_grad inside
            conv.weight.requires_grad_(mode != 2)
            self.whitened = True
        return original(self, images, train_idx, epoch)

    return train_epoch


# trick -> (what its value must be, the check, where its patch goes, the patch for a value)
TRICKS = {
    "warmup": ("EPOCHS, a number > 0", lambda v: v > 0, (contrastive._Run, "_set_lr"), warmup_set_lr),
    "ema": (
        "DECAY, a number in (0, 1)",
        lambda v: 0 < v < 1,
        (contrastive._Run, "train_epoch"),
        ema_train_epoch,
    ),
    "zero-init": ("1", lambda v: v == 1, (autoencoder.Encoder, "__init__"), lambda v: zero_init_encoder()),
    "whiten-stem": (
        "1 (trained) or 2 (fixed)",
        lambda v: v in (1, 2),
        (contrastive._Run, "train_epoch"),
        whiten_stem_train_epoch,
    ),
}


def patch(trick: str, value: float) -> None:
    """Install `trick` at `value` for every contrastive run of this process."""
    _, _, (owner, name), patched = TRICKS[trick]
    setattr(owner, name, patched(value))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] not in TRICKS or "--cache" in argv:
        raise SystemExit(USAGE)
    wanted, accept, _, _ = TRICKS[argv[0]]
    value = number_argument(argv[1], USAGE, wanted, accept)
    patch(argv[0], value)
    print(f"training trick: {argv[0]} {argv[1]}", flush=True)
    return quality.main(argv[2:])


if __name__ == "__main__":
    raise SystemExit(main())
