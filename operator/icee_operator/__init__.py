"""The icee operator: CodeSession -> locked-down Pod, status, cleanup."""
