"""The relman CLI's command groups, one module each; `relman.starter` wires them into `relman`."""
