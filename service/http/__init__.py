"""HTTP edge: one module per resource; handlers parse, call one command, render."""
