"""Stand-ins of the two classes a BYOL checkpoint pickles (stdlib only: the golden-fixture generator imports
it too, in an environment without torch)."""

import types
from typing import Any, NamedTuple


def byol_standin_types():
    """(haiku module, byol module, FlatMapping, _ByolExperimentState) with the module paths and pickling of
    Haiku 0.0.2's `FlatMapping` (pickled as `FlatMapping(dict)`) and deepmind-research/byol's
    `_ByolExperimentState` NamedTuple. The modules are not registered in sys.modules here."""
    hk_mod = types.ModuleType("haiku._src.data_structures")
    byol_mod = types.ModuleType("byol.byol_experiment")

    class FlatMapping:
        def __init__(self, d):
            self._d = dict(d)

        def __reduce__(self):
            return FlatMapping, (self._d,)

    class _ByolExperimentState(NamedTuple):
        online_params: Any
        target_params: Any
        online_state: Any
        target_state: Any
        opt_state: Any

    FlatMapping.__module__, FlatMapping.__qualname__ = hk_mod.__name__, "FlatMapping"
    _ByolExperimentState.__module__, _ByolExperimentState.__qualname__ = byol_mod.__name__, "_ByolExperimentState"
    hk_mod.FlatMapping, byol_mod._ByolExperimentState = FlatMapping, _ByolExperimentState
    return hk_mod, byol_mod, FlatMapping, _ByolExperimentState
