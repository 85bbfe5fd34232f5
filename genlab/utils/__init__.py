"""Helpers for the entry points: config checking and printing, building callbacks and loggers."""
