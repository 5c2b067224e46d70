"""The pure core: quantizers (functions and one small module per kind), metrics and search loops.

Knows nothing about models, data or files; everything above builds on it.
"""
