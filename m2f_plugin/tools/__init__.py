"""Command-line tools shipped inside the package (``python -m m2f_plugin.tools.X``)."""
