"""Shared by the step-parity generators: their command line, the copies they store, and a loss-recording
AverageMeter for the official `train` functions that log their loss through one."""


def loss_recording_meter(average_meter: type, losses: list, position: int = -1) -> type:
    """A subclass of the official AverageMeter that appends each update of the loss meter to `losses`: the
    meter made at `position` of the official train()'s meters (-1, the newest, where train() makes
    batch_time, data_time, then losses; 2 where further meters follow the loss's)."""

    class RecordingMeter(average_meter):
        made = []

        def __init__(self):
            super().__init__()
            self.made.append(self)

        def update(self, val, n=1):
            if (position < 0 or len(self.made) > position) and self is self.made[position]:
                losses.append(val)
            super().update(val, n)

    return RecordingMeter


def generator_args(default_dtype: str = "float64") -> tuple:
    """(snapshot path, commit, dtype name, output folder, torch dtype) from `gen_*.py SRC COMMIT [DTYPE] [OUT]`."""
    import os
    import sys

    import torch

    src, commit = os.path.abspath(sys.argv[1]), sys.argv[2]
    dtype_name = sys.argv[3] if len(sys.argv) > 3 else default_dtype
    out_dir = sys.argv[4] if len(sys.argv) > 4 else os.path.dirname(os.path.abspath(__file__))
    return src, commit, dtype_name, out_dir, getattr(torch, dtype_name)


def detached(state: dict) -> dict:
    """Copies of a state's tensors, contiguous, as the fixtures store them."""
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def cuda_as_identity() -> None:
    """The official code's `.cuda()` calls on this CPU machine: torch.Tensor.cuda, nn.Module.cuda and
    torch.cuda.synchronize do nothing."""
    import torch
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.synchronize = lambda *a, **k: None


def clzoo_noise_draw(indices: list, K: int, n_data: int, seed: int):
    """A replacement for the official AliasMethod `draw` of a memory bank's noise (`idx = draw(B (K + 1)).view(B,
    -1)`, column 0 then overwritten with the positive): the i-th call returns [index, clzoo's K noise indices]
    per sample of `indices[i]`, clzoo's counter-based draw for (seed, 2, step i, 0) (training/modules/
    memory_bank.py `sample`), the one random draw two implementations cannot otherwise share."""
    import torch

    from training.data.rng import randint
    draws = iter(range(len(indices)))

    def draw(n):
        step = next(draws)
        index = indices[step]
        noise = randint(index, K, n_data, seed, 2, step, 0)
        return torch.cat((index[:, None], noise), 1).reshape(-1)
    return draw
