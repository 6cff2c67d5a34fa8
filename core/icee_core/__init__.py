"""Shared pieces of icee: CodeSession models, the language registry, names and labels."""
