"""Compiler passes: from a typed spec to a verified, fitted IR model."""
