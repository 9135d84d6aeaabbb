"""Governance of who may run what: credits and budgets, rate limits, abuse controls (see docs/governance.md)."""
