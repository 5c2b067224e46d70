"""The application: the command line, the end-to-end job (pipeline) and its reports.
Uses ``ptqlib.io`` and below; never ``ptqlib.lab``."""
