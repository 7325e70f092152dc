"""The data: load a labelled text table, the Great Expectations gate, the leak-free split."""
