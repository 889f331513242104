import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:  # `training` is not installed: import it from the repo root
    sys.path.insert(0, ROOT)


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread per test process: on 2 cores shared with another pytest-xdist worker (or any
    other job), two OpenMP threads per process run several times slower than one."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """Accelerate keeps its state (mixed precision, device) in process-wide singletons; each test's run
    must start from a clean one, as a new `accelerate launch` would."""
    yield
    from accelerate.state import AcceleratorState, GradientState
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
