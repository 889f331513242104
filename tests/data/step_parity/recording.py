"""Shared by the generators whose official `train` logs its loss through an AverageMeter."""


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
