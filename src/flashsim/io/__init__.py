"""Input/output: the data contract, ROOT readers and atomic writers."""
