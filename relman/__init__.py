"""relman: durable ITIL release management on Temporal."""
