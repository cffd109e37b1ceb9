"""Timing, energy and area of a ROMA-class chip: an event-driven model over the mesh.

`romachip.perf.simulate.simulate(chip, spec, fmt=..., lora=..., prompt_tokens=..., generate_tokens=...)
-> SimReport` is the one-call API; `ChipModel` keeps a chip + model + placement for many phases
(prefill, decode steps). The package does not re-export the `simulate` function, so that
`import romachip.perf.simulate` gives the module.
"""

from romachip.perf.area import AreaReport, chip_area, l_unit_study
from romachip.perf.energy import EnergyReport
from romachip.perf.phase import PhaseRun
from romachip.perf.simulate import ChipModel, SimReport, report

__all__ = [
    "AreaReport",
    "ChipModel",
    "EnergyReport",
    "PhaseRun",
    "SimReport",
    "chip_area",
    "l_unit_study",
    "report",
]
