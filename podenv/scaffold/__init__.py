"""The files `podenv init NAME` writes into a fork (string.Template: $name, $Name, ...)."""
