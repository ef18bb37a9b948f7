"""Install cost and speed of the embedded models (see ``__main__``)."""
