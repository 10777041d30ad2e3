"""Run configuration: the deployment settings table, the trigger form's params, one typed config per run."""
