"""The run's ledger: the source of truth for jobs, attempts and cached answers."""

from ggufbench.ledger._ledger import JobRow, Ledger, NotOwner
from ggufbench.ledger._migrations import MIGRATIONS, migrate

__all__ = ["MIGRATIONS", "JobRow", "Ledger", "NotOwner", "migrate"]
