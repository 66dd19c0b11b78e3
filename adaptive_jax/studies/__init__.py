"""Studies: runs that write results files, above the model, fitting and metrics code."""
