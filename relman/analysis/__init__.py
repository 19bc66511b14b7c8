"""Pure analysis of release health: the statistical canary judge (`judge`) and the catalog's
`analysis` section (`spec`: Prometheus queries, Argo-style conditions, the judge's settings)."""
