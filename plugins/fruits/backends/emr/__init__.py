"""The EMR backend: cluster and step builders, operators, pre-flight checks and the cost report."""
