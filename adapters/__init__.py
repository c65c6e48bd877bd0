"""One module per legacy source: pure translation from raw input to ``Event``s."""
