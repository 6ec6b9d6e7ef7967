"""``python -m kidata.cli`` (what ``torchrun -m kidata.cli train`` runs)."""

from kidata.cli import run

run()
