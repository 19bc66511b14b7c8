"""Tests of the CMDB store, window rule, impact analysis and DORA metrics."""
