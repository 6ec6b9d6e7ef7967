"""kidata: data and training toolkit for knowledge-insulated vision-language-action models."""

__version__ = "0.1.0"
