"""The public Kallglot surface. It never imports the control plane."""
