"""The package version, in a module of its own so that any module can import it without
importing the package face (``featvis/__init__.py``) that imports them."""

__version__ = "0.1.0"
