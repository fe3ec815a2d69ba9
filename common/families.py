"""The model families the pack knows, each with one spelling (plain Python).

The spellings are public: `SD1.5` is an `sd_version` combo value in users' saved workflows, and all
three are written into files (weight registry, edge-predictor metadata). Detecting a MODEL's family is
host work: `common/host.py`.
"""

from __future__ import annotations

SDXL, SD15, FLUX = "SDXL", "SD1.5", "FLUX"
FAMILIES = (SDXL, SD15, FLUX)  # in the order the sd_version combo lists them
AUTO = "auto"  # the combo value that lets the pack choose (a family from the MODEL, a mode, a precision)

# Spellings written before each family had one: edge predictors saved by earlier versions say "SD15".
# Read, never written.
LEGACY_SPELLINGS = {"SD15": SD15}


def canonical(name: str) -> str:
    """`name` in the pack's spelling: legacy spellings are mapped, anything else is returned as it is
    (an unknown family is refused where it is used, with that caller's message)."""
    return LEGACY_SPELLINGS.get(name, name)
