"""Readers of the files the doctor checks, parsed the way the owner reads them.

They return plain values and collected errors instead of raising, so that a
garbled file becomes a finding rather than a traceback.
"""
