"""The ``chatd`` command line (protocol.md §4).

Owns argument parsing and turning flags into settings overrides; each
subcommand hands over to the part that does the work.
"""
