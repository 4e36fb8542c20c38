"""Bundled data files (a package only so that package-data ships them in wheels)."""
