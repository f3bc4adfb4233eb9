"""The functions the CLI calls: each composes the library modules for one command."""
