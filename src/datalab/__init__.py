"""datalab: a cloud-native data science platform for statistical offices."""

__version__ = "0.1.0"
