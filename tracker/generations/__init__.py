"""Generations of state: the registry of which one is promoted, replay that feeds a new
one, the verification that compares two, and retiring old ones."""
