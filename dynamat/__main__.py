"""``python -m dynamat ...`` is ``dynamat ...`` (what SLURM array tasks run)."""

from dynamat.cli import main

main()
