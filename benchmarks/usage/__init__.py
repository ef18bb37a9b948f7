"""Usage reconciliation benchmark (see ``__main__``)."""
