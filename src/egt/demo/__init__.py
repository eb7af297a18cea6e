"""`egt demo`: the whole recipe on the embedded tiny judge (pipeline) and its replication
report."""
