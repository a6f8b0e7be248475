"""resutil."""
