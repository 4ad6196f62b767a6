"""Data: file loaders with column mapping, named readers for public sets, splits."""
