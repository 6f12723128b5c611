"""Baselines: the least code that does the same job, measured in the same run as kasp."""
