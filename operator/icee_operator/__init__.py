"""The icee operator: CodeSession -> ConfigMap + locked-down Pod, status, cleanup."""
