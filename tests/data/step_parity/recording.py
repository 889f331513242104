"""Shared by the step-parity generators: their command line, the copies they store, and a loss-recording
AverageMeter for the official `train` functions that log their loss through one."""


def loss_recording_meter(average_meter: type, losses: list) -> type:
    """A subclass of the official AverageMeter that appends each update of the loss meter to `losses`. The
    official train() makes batch_time, data_time, then losses: the newest meter is the loss's."""

    class RecordingMeter(average_meter):
        made = []

        def __init__(self):
            super().__init__()
            self.made.append(self)

        def update(self, val, n=1):
            if self is self.made[-1]:
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
