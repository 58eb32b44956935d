"""Delivery targets beside the primary one (Usermaven's Event mutations API).

A run may deliver one correction sheet to several targets; each (row, target) has its own
status, so resuming one target never resends to another.
"""

from __future__ import annotations

USERMAVEN = "usermaven"
MPARTICLE = "mparticle"
TARGETS = (USERMAVEN, MPARTICLE)
