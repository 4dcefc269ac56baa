"""git servers as the operator asks them: the refs a clone URL advertises, nothing else."""
