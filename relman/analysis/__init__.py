"""Pure analysis of release health: the statistical canary judge (`judge`)."""
