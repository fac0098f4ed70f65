"""Training: from data to a run folder (trainer, fit loop, run record, linear probe, strategy)."""
