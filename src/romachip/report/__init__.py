"""Reports: the paper's figures reproduced by the model, tables and plots."""
