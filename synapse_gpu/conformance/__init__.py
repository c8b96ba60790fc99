"""Shipped known answers: the conformance models (cases.py, *.syn) and golden.json (verify.py)."""
